"""The sampler benchmark runs end to end on a small volume (its numbers are not checked:
timings never go in tests), so the script does not rot between the runs the docs cite."""

from benchmarks import bench_sampler


def test_sampler_benchmark_runs(capsys):
    med = bench_sampler.main(["--size", "32", "--window", "16", "--batch", "2", "--batches", "1",
                              "--rounds", "1", "--workers", "0", "--train", "1"])
    assert {"sampler uniform", "sampler labelled", "PatchDataset w0"} <= set(med)
    out = capsys.readouterr().out
    assert "best other" in out and "model busy" in out
