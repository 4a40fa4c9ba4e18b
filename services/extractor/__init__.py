"""The extractor: image URLs and their alt text from Common Crawl WARC and WAT files, as pool shards."""
