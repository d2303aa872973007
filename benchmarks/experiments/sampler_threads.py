"""Where a WindowSampler batch's time goes with 2 and with 1 intra-op threads, alternating
(16 windows 64^3 of a 256^3 float32 volume, int8 labels): the whole batch, the image and label
gathers, the label frame. Medians of 6 calls, in ms.
``python -m benchmarks.experiments.sampler_threads``"""


import torch

import fastquilt as fq
from benchmarks.bench_sampler import make_data
from benchmarks.wall_clock import median_of


def ms(fn) -> float:
    return median_of(fn, 6) * 1e3


def main() -> None:
    vol, lab = make_data(256)
    q = fq.Quilt((256,) * 3, 64, 32, border=8)
    s = fq.WindowSampler(vol, lab, q, -1, batch_size=16, where="uniform", steps_per_epoch=10)
    org, ori = s.draw(0)
    y = torch.empty(16, 1, 64, 64, 64, dtype=torch.int8)
    labels = lab.unsqueeze(1)
    threads = torch.get_num_threads()
    for th in (threads, 1, threads, 1):
        torch.set_num_threads(th)
        image_ms = ms(lambda: fq.gather_windows_oriented(vol, org, ori, q.window))
        label_ms = ms(lambda: fq.gather_windows_oriented(labels, org, ori, q.window))
        frame_ms = ms(lambda: s._mask_frame(y))
        print(f"{th} threads, ms: batch {ms(lambda: s.batch(0)):.1f}, image gather "
              f"{image_ms:.1f}, label gather {label_ms:.1f}, frame {frame_ms:.1f}")
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
