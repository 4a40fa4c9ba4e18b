"""What to do about a download's failures: the flag to pass when most of them share a fixable cause."""

from __future__ import annotations

from winnow.shared.jobs import StageTotals

# reason -> what the user can change about it
FIXES = {
    "blocked_address": "the URLs point at private or loopback addresses, which are refused by default; pass "
                       "--allow_networks with their network (e.g. --allow_networks 127.0.0.0/8) if you mean them",
    "robots_disallowed": "the hosts' robots.txt disallows these URLs; drop --respect_robots_txt to fetch them anyway",
    "opt_out": "the images opt out with X-Robots-Tag; --disallowed_header_directives '[]' switches the check off",
    "hash_mismatch": "the bytes differ from the pool's hashes; drop --verify_hash if the column is not their hash",
    "image_too_small": "the images are under --min_image_size; lower it",
    "aspect_ratio_too_large": "the images are over --max_aspect_ratio; raise it",
    "image_area_too_large": "the images are over --max_image_area; raise it",
    "too_large": "the bodies are over --max_bytes; raise it",
    "timeout": "the servers answer slowly; raise --timeout (and --total_timeout), or lower --thread_count",
    "connection_refused": "the servers refuse connections: check that they are up and the URLs' ports are right",
    "dns_error": "the host names do not resolve: check the URLs and this machine's DNS",
    "unsupported_scheme": "the URLs are not http(s); check --url_col",
    "invalid_url": "the URLs are malformed or empty; check --url_col",
    "rate_limited": "the servers ask to slow down; lower --thread_count or --per_domain_concurrency",
    "ssl_error": "TLS certificates could not be verified; --ignore_ssl_certificate True skips the check",
}


def failure_hints(totals: StageTotals, share: float = 0.5) -> list[str]:
    """One line per fixable reason behind more than ``share`` of the failures (at most one)."""
    failed = sum(totals.reasons.values())
    if not failed:
        return []
    reason, count = totals.reasons.most_common(1)[0]
    if count <= share * failed or reason not in FIXES:
        return []
    return [f"{count} of {failed} failures are {reason}: {FIXES[reason]}"]
