"""Training batches per second: fastquilt's WindowSampler against the per-item loaders, all
serving batches of 3D windows (window 64) with flips and 90-degree rotations plus their label
windows, in one run: contenders alternate, several rounds, the median of each is compared.

* ``sampler``: ``WindowSampler(where="uniform")`` (and ``"labelled"``), augmentation fused into
  the gather, straight from the volume tensor; ``sampler uniform w2``: the same through
  ``DataLoader(sampler, batch_size=None, num_workers=2)`` (as many processes as the loaders);
  ``sampler uniform 1 thread``: in the training process under ``torch.set_num_threads(1)``.
* ``PatchDataset w0`` / ``w2``: ``DataLoader(PatchDataset(augment=True), num_workers=0 / 2)``.
* ``MONAI w0`` / ``w2``: ``RandSpatialCropSamplesd`` + ``RandFlipd`` x 3 + ``RandRotate90d``.
* ``TorchIO w0`` / ``w2``: ``Queue`` with a ``UniformSampler`` and ``RandomFlip`` (no rotation:
  less work than the others do), if torchio is installed.

``--train STEPS`` also runs a short training of a small 3D conv net from the sampler and from
the best per-item loader and prints the model's busy fraction (time in forward/backward/step
over wall time; on a GPU, CUDA event time). ``--device cuda`` puts the volume and the model on
the GPU (the sampler gathers there; the loaders feed it from CPU workers, ``--workers``).

``python benchmarks/bench_sampler.py [--size 256] [--batch 16] [--batches 8] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import time

import torch

import fastquilt as fq

MISSING = -1


def make_data(size: int, seed: int = 0):
    """A float32 volume (1, 1, size^3) and sparse int8 labels (1, size^3), 1% labelled."""
    g = torch.Generator().manual_seed(seed)
    vol = torch.randn(1, 1, size, size, size, generator=g)
    lab = torch.randint(0, 3, (1, size, size, size), generator=g, dtype=torch.int8)
    lab = torch.where(torch.rand(1, size, size, size, generator=g) < 0.01, lab,
                      torch.tensor(MISSING, dtype=torch.int8))
    return vol, lab


def endless(make_iter):
    """Batches from iterators that ``make_iter`` makes, a new one whenever one ends."""
    while True:
        yield from make_iter()


def sampler_source(vol, lab, q, batch, where, device, workers=0, prefetch=True):
    """The sampler iterated directly, or through ``DataLoader(sampler, batch_size=None)`` with
    ``workers`` processes (each makes every ``workers``-th batch)."""
    dev = device if workers == 0 else "cpu"
    s = fq.WindowSampler(vol.to(dev), lab.to(dev), q, MISSING, batch_size=batch,
                         where=where, steps_per_epoch=1 << 30, seed=0, prefetch=prefetch)
    if workers == 0:
        return iter(s)
    return iter(torch.utils.data.DataLoader(s, batch_size=None, num_workers=workers,
                                            persistent_workers=True))


def patch_dataset_source(vol, lab, q, batch, workers):
    ds = fq.PatchDataset(vol, lab, q, MISSING, augment=True,
                         indices=torch.arange(q.num_windows))
    rs = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=1 << 30)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=rs, num_workers=workers,
                                     persistent_workers=workers > 0)
    return iter(dl)


def monai_source(vol, lab, batch, workers, w):
    from monai.data import DataLoader, Dataset, list_data_collate
    from monai.transforms import Compose, RandFlipd, RandRotate90d, RandSpatialCropSamplesd

    keys = ["image", "label"]
    tf = Compose([
        RandSpatialCropSamplesd(keys, roi_size=(w, w, w), num_samples=batch, random_size=False),
        RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandFlipd(keys, prob=0.5, spatial_axis=2), RandRotate90d(keys, prob=0.75),
    ])
    ds = Dataset([{"image": vol[0], "label": lab}] * 1024, transform=tf)
    dl = DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=list_data_collate,
                    persistent_workers=workers > 0)
    return (( b["image"], b["label"]) for b in endless(lambda: iter(dl)))


def torchio_source(vol, lab, batch, workers, w):
    import torchio as tio

    subject = tio.Subject(image=tio.ScalarImage(tensor=vol[0]), label=tio.LabelMap(tensor=lab))
    ds = tio.SubjectsDataset([subject] * 8, transform=tio.RandomFlip(axes=(0, 1, 2)))
    queue = tio.Queue(ds, max_length=4 * batch, samples_per_volume=batch,
                      sampler=tio.UniformSampler(w), num_workers=workers, shuffle_subjects=False)
    dl = torch.utils.data.DataLoader(queue, batch_size=batch, num_workers=0)
    return ((b["image"]["data"], b["label"]["data"]) for b in endless(lambda: iter(dl)))


def contenders(vol, lab, q, batch, device, workers_list):
    """``{name: (make the batch iterator, batches it may hold ready ahead of time)}``."""
    out = {"sampler uniform": (lambda: sampler_source(vol, lab, q, batch, "uniform", device), 1),
           "sampler labelled": (lambda: sampler_source(vol, lab, q, batch, "labelled", device), 1)}
    # in the training process with one intra-op thread (torch.set_num_threads(1) while it runs,
    # as DataLoader workers run): no parallel region waiting for a descheduled thread
    out["sampler uniform 1 thread"] = (
        lambda: sampler_source(vol, lab, q, batch, "uniform", device, prefetch=False), 0)
    for w in [w for w in workers_list if w > 0]:
        out[f"sampler uniform w{w}"] = (
            lambda w=w: sampler_source(vol, lab, q, batch, "uniform", device, w), 2 * w)
    has_monai = importlib.util.find_spec("monai") is not None
    if not has_monai:
        print("monai not installed: its pipeline is left out (make bench installs it)")
    for w in workers_list:
        ahead = 2 * w  # DataLoader's prefetch_factor (2) per worker
        out[f"PatchDataset w{w}"] = (lambda w=w: patch_dataset_source(vol, lab, q, batch, w),
                                     ahead)
        if has_monai:
            out[f"MONAI w{w}"] = (lambda w=w: monai_source(vol, lab, batch, w, q.window[0]),
                                  ahead)
    try:
        import torchio  # noqa: F401

        for w in workers_list:
            # the queue holds up to max_length patches (4 batches) besides the workers' own
            out[f"TorchIO w{w}"] = (lambda w=w: torchio_source(vol, lab, batch, w, q.window[0]),
                                    4 + 2 * w)
    except ImportError:
        print("torchio not installed: its Queue is left out")
    return out


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_batches(it, n: int, batch: int, device, ahead: int = 0) -> float:
    """Windows per second over ``n`` batches of ``it``, moved to ``device``. The ``ahead``
    batches a loader may have made while the other contenders ran are taken first, untimed:
    the timed ones are made while the clock runs."""
    for _ in itertools.islice(it, ahead):
        pass
    sync(device)
    t0 = time.perf_counter()
    got = 0
    for x, y in itertools.islice(it, n):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        got += x.shape[0]
    sync(device)
    assert got == n * batch, (got, n * batch)
    return got / (time.perf_counter() - t0)


def small_net(device):
    c = 8
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, c, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv3d(c, c, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv3d(c, 3, 1)).to(device)


def busy_fraction(it, steps: int, device) -> tuple[float, float]:
    """Train ``steps`` steps from batches of ``it``: (fraction of the wall time spent in the
    model's forward/backward/step, steps per second)."""
    net = small_net(device)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=MISSING)
    cuda = torch.device(device).type == "cuda"
    busy = 0.0
    events = []
    next(it)  # a batch made before the clock starts
    sync(device)
    t0 = time.perf_counter()
    for x, y in itertools.islice(it, steps):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True).long()
        y = y.squeeze(1) if y.dim() == 5 else y
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t = time.perf_counter()
        loss = loss_fn(net(x.float()), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cuda:
            end.record()
            events.append((start, end))
        else:
            busy += time.perf_counter() - t
    sync(device)
    wall = time.perf_counter() - t0
    if cuda:
        busy = sum(s.elapsed_time(e) for s, e in events) / 1e3
    return busy / wall, steps / wall


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8, help="batches timed per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train", type=int, default=0, help="training steps for the busy fraction")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"volume {args.size}^3 float32, window {args.window}, batch {args.batch}, "
          "augmentation on")
    vol, lab = make_data(args.size)
    q = fq.Quilt(vol.shape[2:], args.window, args.window // 2, border=args.window // 8)
    made = contenders(vol, lab, q, args.batch, args.device, args.workers)
    sources = {name: make() for name, (make, _) in made.items()}
    ahead = {name: a for name, (_, a) in made.items()}
    for it in sources.values():  # warm-up: workers started, first batches made
        time_batches(it, 1, args.batch, args.device)
    rates: dict[str, list[float]] = {name: [] for name in sources}
    for r in range(args.rounds):
        names = list(sources) if r % 2 == 0 else list(reversed(sources))
        for name in names:
            threads = torch.get_num_threads()
            if name.endswith("1 thread"):
                torch.set_num_threads(1)
            rates[name].append(time_batches(sources[name], args.batches, args.batch,
                                            args.device, ahead[name]))
            torch.set_num_threads(threads)
    med = {name: statistics.median(v) for name, v in rates.items()}
    best_other = max((v, n) for n, v in med.items() if not n.startswith("sampler"))
    print(f"{'contender':<26} {'windows/s (median)':>20} {'min':>8} {'max':>8}")
    for name, v in med.items():
        print(f"{name:<26} {v:>20.1f} {min(rates[name]):>8.1f} {max(rates[name]):>8.1f}")
    for name in [n for n in med if n.startswith("sampler")]:
        print(f"{name} / best other ({best_other[1]}): {med[name] / best_other[0]:.2f}x")
    if args.train:
        for name in ("sampler uniform", best_other[1]):
            frac, sps = busy_fraction(sources[name], args.train, args.device)
            print(f"training from {name}: model busy {100 * frac:.1f}% of the wall time, "
                  f"{sps:.2f} steps/s")
    return med


if __name__ == "__main__":
    main()
