"""The retrain benchmark's figures: the app's own timestamps, the CPU other processes used, the
tables it prints and its last line's JSON."""

import json
import os
import platform
import re

# What a run's stage covers (classifier/training/); the poll sees only the stages that last.
STAGE_NOTES = {"preparing": " (label snapshot)", "embed": " (features from cache)", "fit": " (head, then card)",
               "export": " (ONNX export, then gate)", "done": " (promoted or kept)"}


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(busy CPU seconds of the whole machine since boot, CPU seconds used by these processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # everything but idle and iowait
    ours = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            ours += int(stat[11]) + int(stat[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return busy / tick, ours / tick


def diagnose(truth: dict[int, str]) -> str:
    """Why no run, or why it failed: the label count the trigger sees, what training_check says."""
    from django.conf import settings

    from classifier.models import ModelVersion, TrainingRun
    from classifier.training import snapshots
    from labeling.selectors import labels_since

    lines = []
    runs = list(TrainingRun.objects.order_by("id"))
    lines.append(f"training runs: {[(r.id, r.trigger, r.mode, r.status, r.stage, r.error) for r in runs] or 'none'}")
    last = runs[-1] if runs else None
    lines.append(f"ground-truth labels since the last run: {labels_since(last.created if last else None)} "
                 f"(RETRAIN_AFTER_LABELS={settings.RETRAIN_AFTER_LABELS}, RETRAIN_MODE={settings.RETRAIN_MODE})")
    try:
        snapshots.training_check()
        lines.append("training_check(): the labels can be trained on")
    except snapshots.TrainingRefused as e:
        lines.append(f"training_check() refuses: {e}")
    for v in ModelVersion.objects.order_by("id"):
        lines.append(f"version {v.name}: {v.kind} {v.status}; {v.status_reason}")
    return "\n".join(lines)


def recorded(result: dict, clock: dict, ids: list[int]) -> dict:
    """The app's own timestamps, in seconds since the last decision returned."""
    from django.db.models import Max

    from classifier.models import Prediction

    run, version = result["run"], result["version"]
    run.refresh_from_db()
    version.refresh_from_db()

    def since(moment):
        return None if moment is None else moment.timestamp() - clock["t0_wall"]

    repredicted = Prediction.objects.filter(model_version=version, image_id__in=ids).aggregate(m=Max("created"))["m"]
    return {
        "run requested": since(run.created), "run started": since(run.started),
        "version registered": since(version.created), "production": since(version.promoted),
        "run succeeded": since(run.finished),
        "fresh upload stored": since(result["fresh_image"].created) if result["fresh_image"] else None,
        "fresh upload predicted": since(result["fresh_prediction"].created) if result["fresh_prediction"] else None,
        "labelled re-predicted": None if result["refused"] else since(repredicted),
    }


def seconds(x, width=9):
    return f"{'-':>{width}}" if x is None else f"{x:{width}.2f}"


def r(x):
    return None if x is None else round(x, 3)


def figures(ctx: dict, result: dict, log_text: str) -> dict:
    """What the tables and the JSON line are made of."""
    from classifier.models import Prediction

    run, version = result["run"], result["version"]
    summary = version.metrics.get("summary", {})
    test = version.metrics.get("test", {})
    ids = list(ctx["truth"])
    exported = re.search(rf"exported {re.escape(version.name)} to ONNX in ([0-9.]+) s", log_text)
    return {
        "run": run, "version": version, "summary": summary, "gate": version.gate or {}, "ids": ids,
        "training_s": (run.finished - run.started).total_seconds() if run.started and run.finished else None,
        "backends": sorted(set(Prediction.objects.filter(model_version=version, image_id__in=ids)
                               .values_list("backend", flat=True))),
        "fresh": result["fresh_prediction"], "classes": len(version.classes),
        "accuracy": test.get("accuracy", summary.get("accuracy")),
        "macro_f1": test.get("macro_f1", summary.get("macro_f1")),
        "export_s": float(exported.group(1)) if exported else None,
    }


def print_setup(args, ctx: dict, clock: dict, fig: dict, database: str, broker: str) -> None:
    ids, kinds = fig["ids"], clock["kinds"]
    print()
    print(f"{len(ids)} labels ({fig['classes']} classes x {args.per_class}) from {args.data}; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); database {database}; "
          f"broker {broker}; one worker, prefork x{args.concurrency}, queues inference+training")
    print(f"setup: uploads predicted by the zero-shot champion in {ctx['upload_and_predict_s']:.1f} s; "
          f"{len(ids)} decisions in {clock['annotate_s']:.1f} s (median {clock['decision_ms_median']:.0f} ms, "
          f"the last {clock['last_decision_ms']:.0f} ms; zero-shot suggestion accepted "
          f"{kinds.get('accepted', 0)}, corrected {kinds.get('corrected', 0)}); "
          + (f"{clock['settle_s']:.1f} s waiting for the worker to take the queued retrain check "
             "before the last decision" if clock["settled"] else "last decision made straight after the others "
             f"({clock['backlog']} messages still queued for the worker)"))
    print(f"CPU during the timed {clock['timed_s']:.1f} s: worker + this process {clock['cpu_ours_s']:.1f} core-s, "
          f"other processes on the machine {clock['cpu_others_s']:.1f} core-s"
          + (" (a busy machine: the figures are slower than on an idle one)"
             if clock["cpu_others_s"] > 0.25 * clock["timed_s"] else ""))


def print_timeline(result: dict, stamps: dict, fig: dict) -> None:
    seen, stages = result["seen"], result["stages"]
    print()
    print(f"{'phase (seconds since the last decision returned)':<52}{'observed':>9}{'recorded':>10}")
    rows = [("trigger: run requested (labels counted in the worker)", "run requested"),
            ("run started (claimed by the worker)", "run started")]
    for stage in sorted(stages, key=stages.get):
        rows.append((f"  stage '{stage}' first seen{STAGE_NOTES.get(stage, '')} *", None, stages[stage]))
    rows += [("version registered (candidate)", "version registered"),
             ("(b) production (gate promoted it)", "production"),
             ("(a) run succeeded", "run succeeded"),
             ("fresh upload stored (on seeing production)", "fresh upload stored"),
             ("(c) fresh upload predicted by the new version", "fresh upload predicted"),
             (f"(d) all {len(fig['ids'])} labelled images re-predicted", "labelled re-predicted")]
    for row in rows:
        if len(row) == 3:
            print(f"{row[0]:<52}{seconds(row[2])}")
        else:
            label, key = row
            print(f"{label:<52}{seconds(seen.get(key))}{seconds(stamps.get(key), 10)}")
    print("* as the run's progress callback wrote it: at most once a second except at a stage's end, so a stage "
          "that starts within a second of the last write shows only when it ends")


def print_breakdown(stamps: dict, fig: dict) -> None:
    print()
    parts = [("trigger (decision -> run requested)", 0.0, stamps.get("run requested")),
             ("queued -> claimed", stamps.get("run requested"), stamps.get("run started")),
             ("claimed -> version registered (snapshot, fit, card)", stamps.get("run started"),
              stamps.get("version registered")),
             ("registered -> promoted (ONNX export, gate)", stamps.get("version registered"), stamps.get("production")),
             ("promoted -> run succeeded", stamps.get("production"), stamps.get("run succeeded")),
             ("production -> fresh upload predicted (upload at sight)", stamps.get("production"),
              stamps.get("fresh upload predicted")),
             ("production -> all labelled re-predicted", stamps.get("production"), stamps.get("labelled re-predicted"))]
    print(f"{'where the time goes (recorded timestamps)':<56}{'seconds':>9}")
    for label, start, end in parts:
        if start is not None and end is not None:
            print(f"{label:<56}{end - start:9.2f}")
    gate_s = (stamps["production"] - stamps["version registered"]) if stamps.get("production") is not None else None
    fig["gate_s"] = gate_s
    if fig["export_s"] is not None and gate_s is not None:
        print(f"  of which ONNX export (worker log) {fig['export_s']:.2f} s, gate (both versions on the test split) "
              f"and promotion {gate_s - fig['export_s']:.2f} s")


def print_version(env: dict, result: dict, fig: dict) -> None:
    run, version, summary, gate = fig["run"], fig["version"], fig["summary"], fig["gate"]
    images = summary.get("n_train", 0) + summary.get("n_val", 0) + summary.get("n_test", 0)
    print(f"training run {run.id} ({run.mode}, trigger {run.trigger}): started -> finished "
          f"{seconds(fig['training_s'], 0)} s; the trainer's own figures: fit() {version.training.get('seconds')} s, "
          f"of which embed {summary.get('embed_seconds')} s (stored features, {images} images) "
          f"and head fit {summary.get('fit_seconds')} s (weight decay {summary.get('weight_decay')}); "
          f"device {version.training.get('hardware', {}).get('device')}")
    print(f"new version {version.name}: test accuracy {fig['accuracy']:.4f}, macro-F1 {fig['macro_f1']:.4f} on "
          f"{summary.get('n_test')} test images (train {summary.get('n_train')}, val {summary.get('n_val')})")
    print(f"gate: {'PROMOTE' if gate.get('promote') else 'KEEP AS CANDIDATE'} - {gate.get('reason')}")
    print(f"      on {gate.get('n')} test images: champion {gate.get('champion')} accuracy "
          f"{gate.get('champion_accuracy', 0):.4f}, macro-F1 {gate.get('champion_macro_f1', 0):.4f}; challenger "
          f"accuracy {gate.get('challenger_accuracy', 0):.4f}, macro-F1 {gate.get('challenger_macro_f1', 0):.4f} "
          f"(PROMOTION_MAX_CLASS_DROP {env.get('PROMOTION_MAX_CLASS_DROP', 'default 0.02')})")
    drops = [c for c in gate.get("per_class", []) if c["delta"] < 0]
    if drops:
        print("      classes whose F1 dropped: " + ", ".join(
            f"{c['label']} {c['champion_f1']:.3f}->{c['challenger_f1']:.3f} (support {c['support']})" for c in drops))
    fresh, seen = fig["fresh"], result["seen"]
    if fresh is not None:
        print(f"fresh upload: {fresh.label} ({fresh.confidence:.3f}) by {fresh.model_version.name} via "
              f"{fresh.backend}, {seen['fresh upload predicted'] - seen['fresh upload stored']:.2f} s from upload to "
              f"prediction (the app's latency_ms {fresh.latency_ms:.0f}, model_ms {fresh.model_ms:.1f}); "
              f"re-predict backend {fig['backends']}")


def summary_line(args, env: dict, clock: dict, result: dict, stamps: dict, fig: dict, database: str,
                 broker: str) -> dict:
    seen, stages, gate, summary, fresh = result["seen"], result["stages"], fig["gate"], fig["summary"], fig["fresh"]
    return {
        "seconds_to_run_succeeded": r(seen.get("run succeeded")),
        "seconds_to_production": r(seen.get("production")),
        "seconds_to_first_new_prediction": r(seen.get("fresh upload predicted")),
        "seconds_to_repredicted": r(seen.get("labelled re-predicted")),
        "training_seconds": r(fig["training_s"]),
        "n_labels": len(fig["ids"]), "classes": fig["classes"], "test_accuracy": fig["accuracy"],
        "test_macro_f1": fig["macro_f1"],
        "gate_promote": gate.get("promote"), "gate_reason": gate.get("reason"), "gate_test_images": gate.get("n"),
        "champion_accuracy": r(gate.get("champion_accuracy")), "champion_macro_f1": r(gate.get("champion_macro_f1")),
        "challenger_accuracy": r(gate.get("challenger_accuracy")),
        "challenger_macro_f1": r(gate.get("challenger_macro_f1")),
        "fit_seconds": fig["version"].training.get("seconds"), "embed_seconds": summary.get("embed_seconds"),
        "head_fit_seconds": summary.get("fit_seconds"), "onnx_export_seconds": fig["export_s"],
        "registered_to_promoted_seconds": r(fig["gate_s"]),
        "recorded": {k: r(v) for k, v in stamps.items()},
        "stages_first_seen": {k: r(v) for k, v in stages.items()},
        "fresh_upload_backend": fresh.backend if fresh else None, "repredict_backends": fig["backends"],
        "poll_s": args.poll, "polls": result["polls"], "per_class": args.per_class,
        "settled_before_last_decision": clock["settled"], "backlog_at_last_decision": clock["backlog"],
        "cpu_core_seconds_ours": r(clock["cpu_ours_s"]), "cpu_core_seconds_other_processes": r(clock["cpu_others_s"]),
        "cpus": os.cpu_count(), "database": database, "broker": broker, "worker_concurrency": args.concurrency,
        "retrain_after_labels": int(env["RETRAIN_AFTER_LABELS"]),
        "max_class_drop": float(env.get("PROMOTION_MAX_CLASS_DROP", 0.02)),
    }


def report(args, env: dict, ctx: dict, clock: dict, result: dict, stamps: dict, database: str, broker: str,
           log_text: str) -> dict:
    """Prints the tables and, last, the JSON line; returns what that line holds."""
    fig = figures(ctx, result, log_text)
    print_setup(args, ctx, clock, fig, database, broker)
    print_timeline(result, stamps, fig)
    print_breakdown(stamps, fig)
    print_version(env, result, fig)
    out = summary_line(args, env, clock, result, stamps, fig, database, broker)
    print(json.dumps(out))
    return out
