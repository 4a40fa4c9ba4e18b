"""DataComp filtering baselines: metadata in, a subset of uids (.npy of u8,u8) out."""
