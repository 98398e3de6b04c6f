"""PyTorch's side of the CPU speed comparison (run.sh): natgrad's zoo models (nn/models.c) built
the same way in PyTorch, one training step's forward + cross-entropy + backward timed as
`natgrad bench` times it (a warm-up step, then the median of --steps), fp32 on the CPU.

  python3 torch_zoo.py --model cnn3d --batch 2 --steps 5 --threads 2

Prints one JSON object: model, batch, threads, ms_per_step."""
import argparse
import json
import time

import torch
import torch.nn as nn


def conv_block(nd, cin, cout, k, pad, bn):
    conv = (nn.Conv2d if nd == 2 else nn.Conv3d)(cin, cout, k, padding=pad)
    layers = [conv]
    if bn:
        layers.append((nn.BatchNorm2d if nd == 2 else nn.BatchNorm3d)(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


def build(model, img):
    """(network, input shape without the batch) as nn/models.c builds them."""
    if model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512),
                             nn.ReLU(), nn.Linear(512, 10)), (1, 28, 28)
    if model == "lenet":
        img = img or 28
        side = ((img // 2) - 4) // 2
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84),
                             nn.ReLU(), nn.Linear(84, 10)), (1, img, img)
    if model == "vgg":
        img = img or 32
        layers, cin = [], 3
        for st in range(4):
            cout = min(64 << st, 512)
            layers += conv_block(2, cin, cout, 3, 1, True) + conv_block(2, cout, cout, 3, 1, True)
            layers.append(nn.MaxPool2d(2))
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
        return nn.Sequential(*layers), (3, img, img)
    if model == "nin":
        img = img or 32
        layers, cin = [], 3
        for b in range(3):
            last = b == 2
            w = 10 if last else 96 * (2 if b else 1)
            k, pad = (5, 2) if b == 0 else (3, 1)
            layers += conv_block(2, cin, w, k, pad, False)
            layers += conv_block(2, w, w, 1, 0, False) + conv_block(2, w, w, 1, 0, False)
            if not last:
                layers.append(nn.MaxPool2d(3, 2, 1))
            cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return nn.Sequential(*layers), (3, img, img)
    if model == "cnn3d":
        img = img or 32
        layers, cin = [], 1
        for _ in range(6):
            layers += conv_block(3, cin, 16, 3, 1, True)
            cin = 16
        layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, 2)]
        return nn.Sequential(*layers), (1, img, img, img)
    if model in ("vit", "vit_tiny_patch4_28"):
        return ViT(img or 28, 4, 1, 192, 12, 3, 10), (1, img or 28, img or 28)
    raise SystemExit(f"torch_zoo.py: unknown model {model}")


class ViT(nn.Module):
    """timm's ViT as nn/transformer.c builds it: patch projection, class token, position
    embedding, pre-norm blocks (attention, GELU MLP of 4 dim), final norm, head on the class
    token; no dropout."""

    def __init__(self, img, patch, in_ch, dim, depth, heads, classes):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, (img // patch) ** 2 + 1, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    net, shape = build(a.model, a.img)
    net.train()
    x = torch.randn(a.batch, *shape)
    classes = 2 if a.model == "cnn3d" else 10
    y = torch.arange(a.batch) % classes
    ms = []
    for s in range(-1, a.steps):  # step -1 warms up, as natgrad bench does
        t = time.perf_counter()
        for p in net.parameters():
            p.grad = None
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        if s >= 0:
            ms.append((time.perf_counter() - t) * 1e3)
    ms.sort()
    print(json.dumps({"model": a.model, "batch": a.batch, "threads": torch.get_num_threads(),
                      "ms_per_step": round(ms[len(ms) // 2], 3)}))


if __name__ == "__main__":
    main()
