"""The downloader: a pool of (uid, url, text) rows in, img2dataset/DataComp shards out."""
