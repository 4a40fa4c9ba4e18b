"""Operations tooling: the topology, deployment rendering and checks, the local stack, Triton's launcher."""
