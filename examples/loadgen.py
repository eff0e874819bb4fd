"""Load generator for the example model service: steady traffic, then an input shift so drift visibly fires.

    python examples/loadgen.py --targets http://127.0.0.1:8000 --rate 20 --shift-after 180 --duration 600

Sends ``POST /predict`` requests with rows drawn (with replacement) from scikit-learn's breast-cancer data at a
steady rate, spread over one or more targets by weight (``URL=weight``). After ``--shift-after`` seconds it
multiplies a few features by ``--shift-factor``: the fleet-wide PSI of those features jumps, the in-process drift
detection emits ``ml.drift.detected`` span events, and the MLFeatureDrift / MLModelDrift alerts fire a few
minutes later. Stops after ``--duration`` seconds (or Ctrl-C) and prints progress every ``--report-every`` seconds.

Every option also reads an environment variable (docker-compose.yml sets them): TARGET_URLS, RATE, BATCH_ROWS,
SHIFT_AFTER_S, SHIFT_FACTOR, SHIFT_FEATURES, DURATION_S, REPORT_EVERY_S, SEED.
Standard library, numpy and scikit-learn only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import numpy as np
from sklearn.datasets import load_breast_cancer

DEFAULT_SHIFT_FEATURES = ("mean radius", "mean texture", "worst area")
REQUEST_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Target:
    url: str
    weight: float


@dataclass
class Stats:
    """Counts since the start (``total``) and since the last progress line (``window``)."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    rows: int = 0
    window: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


def parse_targets(spec: str) -> list[Target]:
    """``"http://a:8000=0.8,http://b:8000=0.2"`` → targets with normalised weights (default weight 1)."""
    targets = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        url, _, weight = part.partition("=")
        w = float(weight) if weight else 1.0
        if w <= 0:
            raise ValueError(f"target weight must be > 0: {part!r}")
        targets.append(Target(url.rstrip("/"), w))
    if not targets:
        raise ValueError("no target URL given")
    total = sum(t.weight for t in targets)
    return [Target(t.url, t.weight / total) for t in targets]


def shift_columns(feature_names: Sequence[str], wanted: Sequence[str]) -> list[int]:
    """Column indices of the features to shift (unknown names are an error, not silently ignored)."""
    names = list(feature_names)
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ValueError(f"unknown feature(s) {missing}; known: {names}")
    return [names.index(w) for w in wanted]


def make_batch(
    data: np.ndarray, rng: np.random.Generator, rows: int, shift: Sequence[int], factor: float
) -> np.ndarray:
    """``rows`` rows drawn with replacement; the ``shift`` columns multiplied by ``factor`` (when shifting)."""
    batch = data[rng.integers(0, len(data), size=rows)].copy()
    if shift:
        batch[:, list(shift)] *= factor
    return batch


def post_predict(url: str, batch: np.ndarray) -> dict[str, object]:
    """One ``POST /predict``; raises on HTTP errors and timeouts."""
    body = json.dumps({"rows": batch.tolist()}).encode()
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
        result: dict[str, object] = json.loads(response.read())
    return result


def wait_ready(targets: Sequence[Target], timeout: float) -> bool:
    """Poll every target's ``/healthz`` until all answer (bounded by ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    pending = {t.url for t in targets}
    while pending and time.monotonic() < deadline:
        for url in sorted(pending):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2.0) as response:
                    if response.status == 200:
                        pending.discard(url)
            except (OSError, urllib.error.URLError):
                pass
        if pending:
            time.sleep(1.0)
    for url in sorted(pending):
        print(f"loadgen: {url} not ready after {timeout:.0f}s", flush=True)
    return not pending


def run(args: argparse.Namespace) -> Stats:
    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    shift = shift_columns([str(n) for n in data.feature_names], args.shift_features)
    targets = parse_targets(args.targets)
    rng = np.random.default_rng(args.seed)
    stop = {"now": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    print(
        f"loadgen: {args.rate:g} req/s x {args.batch_rows} rows to "
        + ", ".join(f"{t.url} ({t.weight:.0%})" for t in targets)
        + f"; shifting {', '.join(args.shift_features)} x{args.shift_factor:g} after {args.shift_after:g}s; "
        f"stopping after {args.duration:g}s",
        flush=True,
    )
    if not wait_ready(targets, args.ready_timeout):
        raise SystemExit(2)

    stats = Stats()
    weights = np.array([t.weight for t in targets])
    interval = 1.0 / args.rate
    start = time.monotonic()
    next_report = start + args.report_every
    shifted_announced = False
    i = 0
    while not stop["now"]:
        now = time.monotonic()
        elapsed = now - start
        if elapsed >= args.duration:
            break
        shifting = elapsed >= args.shift_after
        if shifting and not shifted_announced:
            print(f"loadgen: t={elapsed:.0f}s shifting inputs now", flush=True)
            shifted_announced = True
        target = targets[int(rng.choice(len(targets), p=weights))]
        batch = make_batch(x, rng, args.batch_rows, shift if shifting else (), args.shift_factor)
        stats.sent += 1
        try:
            result = post_predict(target.url, batch)
            stats.ok += 1
            stats.rows += len(batch)
            predictions = result.get("predictions")
            if isinstance(predictions, list):
                stats.window.update(str(p) for p in predictions)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            stats.failed += 1
            stats.errors[type(exc).__name__] += 1
        if now >= next_report:
            mix = ", ".join(f"{k} {v}" for k, v in sorted(stats.window.items())) or "-"
            print(
                f"loadgen: t={elapsed:5.0f}s {'shifted' if shifting else 'normal '} sent {stats.sent} "
                f"ok {stats.ok} failed {stats.failed} rows {stats.rows}; last {args.report_every:g}s: {mix}",
                flush=True,
            )
            stats.window.clear()
            next_report = now + args.report_every
        i += 1
        # steady schedule: request i+1 is due at start + (i+1)/rate; never burst to catch up after a stall
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            i = int((time.monotonic() - start) / interval)
    errors = ", ".join(f"{k} {v}" for k, v in stats.errors.most_common()) or "none"
    print(
        f"loadgen: done after {time.monotonic() - start:.0f}s: sent {stats.sent}, ok {stats.ok}, "
        f"failed {stats.failed} ({errors}), rows {stats.rows}",
        flush=True,
    )
    return stats


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=env("TARGET_URLS", "http://127.0.0.1:8000"), help="URL[=weight],...")
    parser.add_argument("--rate", type=float, default=float(env("RATE", "20")), help="requests per second")
    parser.add_argument("--batch-rows", type=int, default=int(env("BATCH_ROWS", "5")), help="rows per request")
    parser.add_argument("--shift-after", type=float, default=float(env("SHIFT_AFTER_S", "180")), help="seconds")
    parser.add_argument("--shift-factor", type=float, default=float(env("SHIFT_FACTOR", "1.5")))
    parser.add_argument(
        "--shift-features",
        type=lambda s: [f.strip() for f in s.split(",") if f.strip()],
        default=[f.strip() for f in env("SHIFT_FEATURES", ",".join(DEFAULT_SHIFT_FEATURES)).split(",") if f.strip()],
        help="comma-separated feature names",
    )
    parser.add_argument("--duration", type=float, default=float(env("DURATION_S", "900")), help="seconds")
    parser.add_argument("--report-every", type=float, default=float(env("REPORT_EVERY_S", "10")), help="seconds")
    parser.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for /healthz")
    parser.add_argument("--seed", type=int, default=int(env("SEED", "0")))
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.batch_rows < 1 or args.duration <= 0 or args.report_every <= 0:
        parser.error("--rate, --batch-rows, --duration and --report-every must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    stats = run(parse_args(argv))
    return 0 if stats.ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
