"""winnow's common library: shard format, storage, bus, model client, service shell, config."""
