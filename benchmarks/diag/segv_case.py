import faulthandler; faulthandler.enable()
import torch, fastquilt as fq
x = torch.randn(1, 1, 8, 8)
for org in (torch.tensor([[0, 0, 0]]).int(), torch.tensor([[0, 0]]), torch.tensor([[0, 5, 0]])):
    try:
        fq.gather_windows(x, org, (4, 4))
    except Exception as e:
        print(type(e).__name__, str(e).splitlines()[0])
print("segv case done")
