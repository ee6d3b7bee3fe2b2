"""The pipeline from data to a served video, in sequence, with small settings (slow: a training run and
six onnx2tf conversions): train -> export -> edge-anytime profile -> simulator replay -> edge-anytime deploy
-> edge-anytime serve --source clip.mp4 from the package, the way docs/quickstart.md and docs/deploy.md
write it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, data_dir


def step(*argv: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(argv)}:\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.slow
def test_train_export_profile_replay_deploy_serve_a_video(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (requirements/dev.txt) writes the clip")
    data = str(data_dir())
    run, bundle, package = tmp_path / "run", tmp_path / "bundle", tmp_path / "pkg"
    step("-m", "training.train", "--arch", "resann", "--dataset", "gtsrb32", "--epochs", "1", "--out", str(run),
         "--arch-kwargs", '{"widths": [8, 16, 16]}', "--limit-eval", "1000",
         "--data-dir", data, "--device", "cpu")
    step("-m", "training.export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(bundle),
         "--precision", "fp32", "--parity-samples", "32", "--data-dir", data, "--cache-dir", str(tmp_path / "cache"))
    step("-m", "edge_anytime", "profile", "--bundle", str(bundle), "--target", "x86-64", "--warmup", "5",
         "--samples", "100")
    replay = step("-m", "simulator.replay", "--bundle", str(bundle), "--stream", "gtsrb-tracks", "--budget",
                  "uniform:0.3:2", "--frames", "300", "--clock", "sim", "--target", "x86-64",
                  "--json", str(tmp_path / "replay.json"))
    assert "clock sim" in replay.stdout and json.loads((tmp_path / "replay.json").read_text())
    step("-m", "edge_anytime", "deploy", "--target", "x86-64", "--bundle", str(bundle), "--out", str(package))

    from training.data import load_split

    x, y = load_split("gtsrb32", "test", data_dir=data_dir())
    x, y = x[:200], y[:200]
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, (1280, 720))
    for image in x:
        writer.write(cv2.resize(np.ascontiguousarray(image[..., ::-1]), (1280, 720), interpolation=cv2.INTER_LINEAR))
    writer.release()
    np.savez(tmp_path / "small.npz", frames=x, labels=y)
    accuracy = {}
    for name, source, extra in (("video", str(clip), ["--resize", "stretch"]),
                                ("small", f"npz:{tmp_path / 'small.npz'}", [])):
        log = tmp_path / f"{name}.jsonl"
        served = step("-m", "edge_anytime", "serve", "--bundle", str(package / "bundle"), "--source", source,
                      "--budget-ms", "1000", "--profile-target", "x86-64", "--sink", f"jsonl:{log}",
                      "--stats-every", "0", *extra)
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(records) == 200 and all(r["status"] == "final" for r in records), served.stderr[-2000:]
        accuracy[name] = float(np.mean(np.array([r["label"] for r in records]) == y))
    print(f"one-epoch model: accuracy 1280x720 clip {accuracy['video']:.3f}, 32x32 {accuracy['small']:.3f}")
    assert accuracy["small"] > 2 / 43                                  # learned something in one short epoch
    assert abs(accuracy["video"] - accuracy["small"]) <= 0.03          # 200 frames, lossy codec
