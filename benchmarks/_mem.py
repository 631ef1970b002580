"""Peak-RSS helpers (Linux /proc; no psutil needed)."""

from __future__ import annotations


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def rss_mib() -> float:
    """Current resident set size, MiB."""
    return _status("VmRSS")


def peak_rss_mib() -> float:
    """Peak resident set size since start or the last :func:`reset_peak`, MiB."""
    return _status("VmHWM")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
