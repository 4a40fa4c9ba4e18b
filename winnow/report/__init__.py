"""``winnow report``: a curation report of a job, as one HTML page that opens offline."""
