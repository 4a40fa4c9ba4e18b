"""Resharding: the samples a subset names, copied into new shards (repeats upsampled)."""
