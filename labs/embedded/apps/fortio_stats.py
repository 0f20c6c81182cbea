"""Fortio's histogram and its text report, so `fortio load` output reads (and parses) like the
real tool's: the same buckets, percentile interpolation and number formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# fortio stats.histogramBucketValues, in units of the resolution (0.001 s by default)
BUCKETS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 25, 30, 35, 40, 45, 50,
           60, 70, 80, 90, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 2000, 3000, 4000,
           5000, 7500, 10000, 20000, 30000, 40000, 50000, 75000, 100000)
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)


def go_g(value: float) -> str:
    """Go's `%g` (shortest representation): 271.0 -> 271, 2.7336e-05 stays."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass
class Counter:
    """count / min / max / sum / sum of squares, printed as fortio prints them."""

    count: int = 0
    min: float = 0.0
    max: float = 0.0
    sum: float = 0.0
    sum_sq: float = 0.0

    def record(self, value: float) -> None:
        if self.count == 0 or value < self.min:
            self.min = value
        if self.count == 0 or value > self.max:
            self.max = value
        self.count += 1
        self.sum += value
        self.sum_sq += value * value

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0

    @property
    def stddev(self) -> float:
        if not self.count:
            return 0.0
        return math.sqrt(max(self.sum_sq / self.count - self.avg * self.avg, 0.0))

    def line(self, title: str) -> str:
        if not self.count:
            return f"{title} : no data"
        return (f"{title} : count {self.count} avg {self.avg:.8g} +/- {self.stddev:.4g} "
                f"min {go_g(self.min)} max {go_g(self.max)} sum {self.sum:.9g}")


@dataclass
class Histogram(Counter):
    resolution: float = 0.001
    hits: dict[int, int] = field(default_factory=dict)

    def record(self, value: float) -> None:
        super().record(value)
        scaled = value / self.resolution
        index = len(BUCKETS) - 1
        for i in range(1, len(BUCKETS)):
            if scaled < BUCKETS[i]:
                index = i - 1
                break
        self.hits[index] = self.hits.get(index, 0) + 1

    def buckets(self) -> list[tuple[float, float, float, int]]:
        """(start, end, cumulative percent, count) of every non-empty bucket, like Export()."""
        out: list[tuple[float, float, float, int]] = []
        total = 0
        for index in sorted(self.hits):
            total += self.hits[index]
            start = self.min if not out else BUCKETS[index] * self.resolution
            end = (BUCKETS[index + 1] * self.resolution if index + 1 < len(BUCKETS)
                   else self.max)
            out.append((start, min(end, self.max), 100.0 * total / self.count, self.hits[index]))
        return out

    def percentile(self, percent: float) -> float:
        """fortio's CalcPercentile: linear inside the bucket, min up to 1/count."""
        if percent >= 100:
            return self.max
        previous = 100.0 / self.count
        if percent <= previous:
            return self.min
        for start, end, cumulative, _ in self.buckets():
            if percent <= cumulative:
                return start + (percent - previous) / (cumulative - previous) * (end - start)
            previous = cumulative
        return self.max

    def merge(self, other: Histogram) -> None:
        """Add `other`'s data (same resolution): fortio's per-connection -> total histogram."""
        if not other.count:
            return
        if not self.count or other.min < self.min:
            self.min = other.min
        if not self.count or other.max > self.max:
            self.max = other.max
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        for index, hits in other.hits.items():
            self.hits[index] = self.hits.get(index, 0) + hits

    def report(self, title: str, percentiles: tuple[float, ...] = PERCENTILES) -> list[str]:
        lines = [self.line(title)]
        if not self.count:
            return lines
        lines.append("# range, mid point, percentile, count")
        for i, (start, end, cumulative, count) in enumerate(self.buckets()):
            sep = ">=" if i == 0 else ">"
            lines.append(f"{sep} {start:.6g} <= {end:.6g} , {(start + end) / 2:.6g} , "
                         f"{cumulative:.2f}, {count}")
        lines += [f"# target {go_g(p)}% {self.percentile(p):.6g}" for p in percentiles]
        return lines
