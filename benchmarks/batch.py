"""End-to-end throughput of a batch inference job, against a plain torch eager loop, in one run.

A throwaway installation (SQLite, filesystem broker, media in a temporary folder) gets the
images of DIR uploaded (not timed); then, timed:

  baseline   a plain loop in this process: read the file, decode with PIL, transform, run
             EfficientNet-Lite0 eagerly in batches of 32 (torch's default threads);
  job, 1 w   a batch job through the app (job -> chunks -> worker -> bulk write) with one real
             Celery worker process using every core;
  job, 2 w   the same with two worker processes, one core's worth of threads each.

The wall time of a job runs from the request to the job's "done", so it includes planning,
queueing, decoding (in threads, overlapped with the model), the model and the database writes.

    python -m benchmarks.batch --data ../shared/datasets/caltech101-animals [--images 400]

The last line printed is JSON with images/s for each and the ratios against the baseline.
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from animalsite import processes
from benchmarks.harness import DEFAULT_DATA
from classifier.ml.images import IMAGE_SUFFIXES


def image_files(root: Path, limit: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    # Spread the sample over the classes rather than taking the first folders.
    step = max(1, len(files) // limit) if limit else 1
    return files[::step][:limit] if limit else files


def baseline(files: list[Path], batch_size: int) -> float:
    import torch
    from PIL import Image as PILImage

    from classifier.ml.backbones import get_spec, load_backbone

    spec = get_spec("efficientnet_lite0")
    model = load_backbone("efficientnet_lite0").eval()
    transform = spec.preprocessing.transform()
    with torch.inference_mode():  # warm-up, as the job's workers get
        model(torch.stack([transform(PILImage.open(p).convert("RGB")) for p in files[:2]]))
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(files), batch_size):
            batch = [transform(PILImage.open(p).convert("RGB")) for p in files[start:start + batch_size]]
            model(torch.stack(batch))
    return time.perf_counter() - started


def start_workers(n: int, env: dict, log_dir: Path) -> list:
    """n Celery workers (one process each) sharing the cores; not waited for (the warm-up job is)."""
    threads = max(1, (os.cpu_count() or 1) // n)
    return [processes.start(processes.worker_command([env["INFERENCE_QUEUE"]], name=f"bench{n}-{i}",
                                                     loglevel="WARNING"),
                            env=env | {"TORCH_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)},
                            log_path=log_dir / f"worker-{n}-{i}.log", name=f"worker-{n}-{i}")
            for i in range(n)]


def run_job(n_workers: int, image_ids: list[int], env: dict, log_dir: Path, timeout: float) -> dict:
    from django.contrib.auth import get_user_model

    from classifier import jobs
    from classifier.models import Embedding, InferenceChunk, Prediction

    def forget():  # every run predicts every image from its file: no stored prediction or feature
        Prediction.objects.all().delete()
        Embedding.objects.all().delete()

    forget()
    workers = start_workers(n_workers, env, log_dir)
    try:
        # Warm: each worker loads its model on its first chunk; a tiny job first keeps that
        # (a once-per-process cost) out of the figure.
        warm = jobs.job_create(user=get_user_model().objects.get(username="bench"), source="selection",
                               image_ids=image_ids[:n_workers])
        _wait(warm.id, timeout)
        forget()
        started = time.perf_counter()
        job = jobs.job_create(user=get_user_model().objects.get(username="bench"), source="selection",
                              image_ids=image_ids)
        job = _wait(job.id, timeout)
        seconds = time.perf_counter() - started
        chunks = InferenceChunk.objects.filter(job=job)
        return {
            "seconds": round(seconds, 2), "images_per_s": round(len(image_ids) / seconds, 2),
            "failed": job.failed_images, "workers_used": len(set(chunks.values_list("worker", flat=True))),
            "decode_s": round(sum(c.decode_seconds or 0 for c in chunks), 2),
            "model_s": round(sum(c.model_seconds or 0 for c in chunks), 2),
        }
    finally:
        processes.stop(*workers, timeout=30)


def _wait(job_id: int, timeout: float):
    from classifier.models import InferenceJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = InferenceJob.objects.get(id=job_id)
        if job.status in InferenceJob.FINISHED:
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=400, help="how many images (0: all)")
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)

    var = Path(tempfile.mkdtemp(prefix="animalsite-bench-"))
    env = dict(os.environ, VAR_DIR=str(var), DATABASE_URL=f"sqlite:///{var / 'db.sqlite3'}",
               CELERY_BROKER_URL="filesystem://", INFERENCE_QUEUE="bench-inference", TRAINING_QUEUE="bench-training",
               INFERENCE_CHUNK_SIZE=str(args.chunk_size), INFERENCE_BATCH_SIZE=str(args.batch_size),
               RETRAIN_AFTER_LABELS="0", DJANGO_SETTINGS_MODULE="animalsite.settings")
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from classifier import registry, uploads

    try:
        call_command("migrate", verbosity=0)
        files = image_files(args.data, args.images)
        registry.species_create_many(names=sorted({p.parent.name for p in files}))
        user = get_user_model().objects.create_user("bench")
        ids = [uploads.image_upload(user=user, filename=p.name, data=p.read_bytes(), classify=False).image.id
               for p in files]

        base_s = baseline(files, args.batch_size)
        base = {"seconds": round(base_s, 2), "images_per_s": round(len(files) / base_s, 2)}
        one = run_job(1, ids, env, var, args.timeout)
        two = run_job(2, ids, env, var, args.timeout)
    finally:
        shutil.rmtree(var, ignore_errors=True)

    print(f"{len(files)} images from {args.data}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(f"{'path':<34}{'seconds':>9}{'images/s':>10}{'vs baseline':>13}")
    print(f"{'plain torch eager loop':<34}{base['seconds']:>9}{base['images_per_s']:>10}{1.0:>13.2f}")
    for name, r in (("batch job, 1 worker process", one), ("batch job, 2 worker processes", two)):
        print(f"{name:<34}{r['seconds']:>9}{r['images_per_s']:>10}{r['images_per_s'] / base['images_per_s']:>13.2f}"
              f"   (decode {r['decode_s']} s in threads, model {r['model_s']} s, workers used {r['workers_used']})")
    result = {
        "images": len(files), "cpus": os.cpu_count(), "baseline_images_per_s": base["images_per_s"],
        "job_1_worker_images_per_s": one["images_per_s"], "job_2_workers_images_per_s": two["images_per_s"],
        "ratio_1_worker_vs_baseline": round(one["images_per_s"] / base["images_per_s"], 3),
        "ratio_2_workers_vs_baseline": round(two["images_per_s"] / base["images_per_s"], 3),
        "one_worker": one, "two_workers": two, "chunk_size": args.chunk_size, "batch_size": args.batch_size,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
