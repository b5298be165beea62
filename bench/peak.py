"""The peak RSS of a benchmark's child process, for the code the benchmarks run with `python -c`.

Prepend `PEAK_RSS` to a child's source and call `peak_rss_mib()` there. It reads VmHWM, which
starts afresh at exec; getrusage's ru_maxrss does not: Linux keeps it across exec, so a child
reports its parent's peak whenever that was higher (a parent that generated a 20,000-article corpus
made every child of the scale benchmark report 351 MiB).
"""

PEAK_RSS = r"""
def peak_rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
