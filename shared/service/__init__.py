"""The service shell: a gRPC server and a bus worker around one stage."""
