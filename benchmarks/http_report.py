"""The HTTP benchmark's figures: percentiles of its results, the tables it prints and its last
line's JSON."""

import os
import platform

from benchmarks.harness import redact
from benchmarks.http_client import Result
from benchmarks.memory import SAMPLE_EVERY_S, Peak


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def r1(value):
    return None if value is None else round(value, 1)


def summarize(results: list[Result]) -> dict:
    ok = [r for r in results if r.ok]

    def pct(attr, q):
        return r1(percentile([getattr(r, attr) for r in ok if getattr(r, attr) is not None], q))

    return {
        "requests": len(results), "ok": len(ok), "errors": len(results) - len(ok),
        "p50_ms": pct("total_ms", 50), "p95_ms": pct("total_ms", 95),
        "max_ms": r1(max((r.total_ms for r in ok), default=None)),
        "post_p50_ms": pct("post_ms", 50), "post_p95_ms": pct("post_ms", 95),
        "server_latency_p50_ms": pct("server_latency_ms", 50), "server_latency_p95_ms": pct("server_latency_ms", 95),
        "model_p50_ms": pct("model_ms", 50), "model_p95_ms": pct("model_ms", 95),
        "polls_per_prediction": round(sum(r.polls for r in ok) / len(ok), 1) if ok else None,
        "get_p50_ms": r1(percentile([ms for r in results for ms in r.get_ms], 50)),
        "get_p95_ms": r1(percentile([ms for r in results for ms in r.get_ms], 95)),
    }


def figures(args, run: dict, peaks: dict) -> dict:
    """What the report and the JSON line are made of."""
    window_end = run["t0"] + args.duration
    load = run["load"]
    all_results = run["warm"] + run["sequential"] + load
    all_peak = {name: Peak() for name in ("web", "worker")}
    for phase in peaks.values():
        for name, peak in phase.items():
            all_peak[name].merge(peak)
    return {
        "seq": summarize(run["sequential"]), "loaded": summarize(load), "window_end": window_end,
        "in_window": [r for r in load if r.ok and r.done <= window_end],
        "errors": [r for r in all_results if not r.ok],
        "backends": sorted({r.backend for r in all_results if r.ok}),
        "versions": sorted({r.model_version for r in all_results if r.ok}),
        "all_peak": all_peak, "gets_per_s": sum(r.polls for r in load) / max(run["t_end"] - run["t0"], 1e-9),
    }


def print_setting(args, run: dict, fig: dict) -> None:
    app = run["app"]
    print(f"\n{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), load average "
          f"{run['load_before'][0]:.2f} before the timed phases, {run['load_after'][0]:.2f} after (the clients run "
          "in this process, on the same CPUs)")
    print(f"database {run['database']}, broker {redact(args.redis_url)}, web: gunicorn "
          f"{args.web_workers} workers x {args.web_threads} threads, worker: celery prefork x{args.worker_concurrency}"
          f", model threads {args.worker_threads or 'default'}; {len(run['warm'])} warm-up uploads untimed")
    print(f"model {', '.join(fig['versions']) or '?'} ({app['backbone']}, {app['classes']} classes), backend "
          f"{', '.join(fig['backends']) or '?'}; setup + start-up {run['startup_s']:.1f} s (of which "
          f"{run['prep_s']:.1f} s preparing {len(run['payloads'])} distinct JPEGs from {len(run['files'])} photos "
          f"of {args.data.name})")


def print_tables(args, run: dict, fig: dict) -> None:
    seq, loaded = fig["seq"], fig["loaded"]
    print(f"\n{'phase':<32}{'requests':>9}{'ok':>6}{'errors':>7}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'pred/s':>8}")
    print(f"{f'sequential (poll {args.poll_ms:g} ms)':<32}{seq['requests']:>9}{seq['ok']:>6}{seq['errors']:>7}"
          f"{seq['p50_ms']!s:>9}{seq['p95_ms']!s:>9}{seq['max_ms']!s:>9}"
          f"{seq['ok'] / run['seq_s']:>8.1f}")
    print(f"{f'load: {args.clients} clients, {args.duration:g} s':<32}{loaded['requests']:>9}{loaded['ok']:>6}"
          f"{loaded['errors']:>7}{loaded['p50_ms']!s:>9}{loaded['p95_ms']!s:>9}{loaded['max_ms']!s:>9}"
          f"{len(fig['in_window']) / args.duration:>8.1f}")
    print(f"\nwhere the time goes, p50 ms{'':<6}{'total':>8}{'POST':>8}{'queued->stored':>16}{'model':>8}"
          f"{'one GET':>9}{'GETs':>6}")
    for name, s in (("sequential", seq), ("load", loaded)):
        print(f"{name:<32}{s['p50_ms']!s:>8}{s['post_p50_ms']!s:>8}{s['server_latency_p50_ms']!s:>16}"
              f"{s['model_p50_ms']!s:>8}{s['get_p50_ms']!s:>9}{s['polls_per_prediction']!s:>6}")
    print("  POST: the upload's answer (validate, store, commit, enqueue); queued->stored: the prediction's own\n"
          "  latency_ms, from the row's creation inside the POST to the stored prediction (broker, worker claim,\n"
          "  read + decode, model, write); model: the network alone; the rest of total is the polling noticing\n"
          f"  it (one GET's round trip plus part of an interval). GETs during the load: {fig['gets_per_s']:.0f}/s.")
    if run["exhausted"]:
        print(f"  load stopped early: all {len(run['load_payloads'])} prepared uploads were used "
              "(raise --max-load-requests)")
    print(f"  {len(run['load']) - len(fig['in_window']) - loaded['errors']} load uploads finished after the window "
          f"(counted for latency, not for pred/s); the last at +{run['t_end'] - fig['window_end']:.1f} s")


def print_memory_and_errors(run: dict, fig: dict, peaks: dict) -> None:
    print(f"\n{'memory, MB':<28}{'RSS sum':>9}{'max one':>9}{'PSS sum':>9}{'procs':>7}   (peak per phase, "
          f"sampled every {SAMPLE_EVERY_S:g} s)")
    for phase in ("sequential", "load"):
        for name, label in (("web", "web (gunicorn)"), ("worker", "worker (celery)")):
            p = peaks.get(phase, {}).get(name)
            if p:
                m = p.mb()
                print(f"{f'{label}, {phase}':<28}{m['rss_sum_mb']:>9}{m['rss_max_single_mb']:>9}"
                      f"{m['pss_sum_mb']:>9}{m['processes']:>7}")
    if fig["errors"]:
        print(f"\n{len(fig['errors'])} ERRORS; the first ones:")
        for r in fig["errors"][:5]:
            print(f"  {r.error}")
        for name, text in run["logs"].items():
            print(f"\n--- {name}.log (last lines) ---\n{text}")


def summary(args, run: dict, fig: dict, peaks: dict) -> dict:
    """The last line's JSON."""
    seq, loaded, errors, backends = fig["seq"], fig["loaded"], fig["errors"], fig["backends"]
    load_peak, seq_peak = peaks["load"], peaks.get("sequential", peaks["idle"])
    load_before, load_after = run["load_before"], run["load_after"]
    return {
        "p50_ms": seq["p50_ms"], "p95_ms": seq["p95_ms"], "max_ms": seq["max_ms"],
        "poll_ms": args.poll_ms, "sequential": seq,
        "load_throughput_per_s": round(len(fig["in_window"]) / args.duration, 2), "load_p50_ms": loaded["p50_ms"],
        "load_p95_ms": loaded["p95_ms"], "load_max_ms": loaded["max_ms"], "load_poll_ms": args.load_poll_ms,
        "load_poll_backoff": args.load_poll_backoff,
        "load": loaded | {"in_window": len(fig["in_window"]), "gets_per_s": round(fig["gets_per_s"], 1),
                          "drain_s": round(max(0.0, run["t_end"] - fig["window_end"]), 1),
                          "payloads_exhausted": run["exhausted"]},
        "errors": len(errors), "error_examples": [r.error for r in errors[:5]],
        "peak_rss_web_mb": load_peak["web"].mb()["rss_sum_mb"],
        "peak_rss_web_max_single_mb": load_peak["web"].mb()["rss_max_single_mb"],
        "peak_rss_worker_mb": load_peak["worker"].mb()["rss_sum_mb"],
        "peak_rss_worker_max_single_mb": load_peak["worker"].mb()["rss_max_single_mb"],
        "memory": {phase: {name: p.mb() for name, p in ps.items()} for phase, ps in peaks.items()}
        | {"overall": {name: p.mb() for name, p in fig["all_peak"].items()}},
        "sequential_peak_rss_web_mb": seq_peak["web"].mb()["rss_sum_mb"],
        "sequential_peak_rss_worker_mb": seq_peak["worker"].mb()["rss_sum_mb"],
        "clients": args.clients, "duration_s": args.duration, "requests": args.requests,
        "backend": backends[0] if len(backends) == 1 else backends, "model_version": fig["versions"],
        "backbone": run["app"]["backbone"], "database": run["database"],
        "web_workers": args.web_workers, "web_threads": args.web_threads,
        "worker_concurrency": args.worker_concurrency, "worker_threads": args.worker_threads or "default",
        "serving_backend_setting": args.serving_backend or "default", "warmup": len(run["warm"]),
        "cpus": os.cpu_count(), "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "startup_s": round(run["startup_s"], 1),
    }
