"""torch.compile(fullgraph=True) of unstitch -> conv -> stitch: one graph, no breaks."""

import torch
import torch._dynamo

import fastquilt as fq


def _count_graphs():
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    return graphs, backend


def test_compile_fullgraph_one_graph_with_backward():
    torch._dynamo.reset()
    q = fq.Quilt((24, 20, 22), 8, 6, border=1, border_weight=0.2)
    conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def f(x):
        p = q.unstitch(x)
        mean, _ = q.stitch(conv(p))
        return mean

    graphs, backend = _count_graphs()
    cf = torch.compile(f, fullgraph=True, backend=backend)
    x = torch.randn(2, 1, 24, 20, 22, requires_grad=True)
    y = cf(x)
    torch.testing.assert_close(y, f(x))
    assert len(graphs) == 1
    explain = torch._dynamo.explain(f)(x)
    assert explain.graph_count == 1 and explain.graph_break_count == 0
    y.sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    f(x).sum().backward()
    torch.testing.assert_close(g1, x.grad)


def test_compile_inductor_2d():
    torch._dynamo.reset()
    q = fq.Quilt((32, 30), 8, 4, weight="gaussian")
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def f(x):
        return q.stitch(torch.relu(conv(q.unstitch(x))))[0]

    cf = torch.compile(f, fullgraph=True)
    x = torch.randn(2, 3, 32, 30)
    torch.testing.assert_close(cf(x), f(x), rtol=1e-5, atol=1e-5)


def test_compile_fullgraph_on_the_device(device):
    torch._dynamo.reset()
    q = fq.Quilt((32, 30, 28), 16, 8, weight="gaussian")
    conv = torch.nn.Conv3d(1, 1, 3, padding=1).to(device)

    def f(x):
        return q.stitch(conv(q.unstitch(x)))[0]

    x = torch.randn(1, 1, 32, 30, 28, device=device)
    cf = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(cf(x), f(x), rtol=1e-4, atol=1e-4)
