"""The compositionality suite (SugarCrepe, ARO, Winoground) on fixture data in the official layouts and a
tiny random-weight open_clip model: clip_frozen equals clip_benchmark's image_caption_selection numbers
(and ARO's own evaluation, which clip_benchmark lacks), every head runs, ties are never a win, and missing
data fails in seconds with its layout."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import assert_outcomes_reproduce_metrics
from test_backbone import TINY
from test_retrieval_suite import make_coco_train, noisy_images

from bench.cli import main
from bench.core.errors import DataError
from bench.data import fixtures, selection_data
from bench.data.fixtures import make_aro, make_sugarcrepe, make_winoground
from bench.report import results


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("comp")
    sugar = make_sugarcrepe(root, per_task=6)
    noisy_images(sugar / "val2017", [p.name for p in (sugar / "val2017").iterdir()], 5)
    wino = make_winoground(root, n=16)
    make_aro(root)
    noisy_images(wino / "images", [p.name for p in (wino / "images").iterdir()], 6)
    make_coco_train(root)
    cfg = root / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    small = root / "small.yaml"
    small.write_text(
        "train: {steps: 4, batch_size: 8, warmup_steps: 1}\nheads: {kme_rff: {num_features: 64}}\n"
        f"suites: {{compositionality: {{layers: 2, workers: 0, batch_size: 8, cache_dir: '{root / 'cache'}'}}}}\n"
    )
    return root, cfg, small


def run(root, cfg, small, out, heads="clip_frozen,cosine", extra=()):
    args = ["--suite", "compositionality", "--backbone", cfg, "--data-root", root, "--config", small]
    return main([*map(str, args), "--heads", heads, "--out", str(out), "--no-progress", "--device", "cpu", *extra])


def test_readers_follow_the_official_layouts(data):
    root, _, _ = data
    sc = selection_data.load(root, "sugarcrepe_swap_att")
    assert len(sc.instances) == 6 and sc.instances[1] == ([1], [2, 3])
    assert sc.captions[2] == fixtures._words(11, 4) and sc.captions[3] == fixtures._words(14, 5)
    wg = selection_data.load(root, "winoground")
    assert len(wg.instances) == 16 and wg.instances[2] == ([4, 5], [4, 5])
    assert wg.image_paths[5].name == "ex_2_img_1.png" and wg.captions[5] == fixtures._words(27, 4)


def test_clip_frozen_equals_clip_benchmarks_image_caption_selection(data, tmp_path):
    from clip_benchmark.datasets.sugar_crepe import SugarCrepe
    from clip_benchmark.metrics import image_caption_selection

    from bench.data import image_source
    from bench.features.backbone import Backbone, BackboneSpec

    root, cfg, small = data
    assert run(root, cfg, small, tmp_path, heads="clip_frozen") == 0
    ours = results.read(results.run_path(tmp_path, "compositionality", "clip_frozen")).metrics
    bb = Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=0)  # the same seed: the same random weights

    def collate(batch):
        imgs, caps = zip(*batch)
        return torch.stack(imgs) if isinstance(imgs[0], torch.Tensor) else imgs, list(caps)

    for task in selection_data.SUGARCREPE_TASKS:
        ds = SugarCrepe(
            str(root / "sugar_crepe" / "val2017"), str(root / "sugar_crepe" / f"{task}.json"), bb.preprocess
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
        theirs = image_caption_selection.evaluate(bb.model, loader, bb.tokenizer, "cpu", amp=False)
        assert ours[f"sugarcrepe_{task}/acc"] == pytest.approx(theirs["text_acc"], abs=1e-9), task
    wg = selection_data.load(root, "winoground")
    items = [
        (
            torch.stack([bb.preprocess(image_source.open_image(wg.image_paths[i])) for i in imgs]),
            [wg.captions[c] for c in caps],
        )
        for imgs, caps in wg.instances
    ]
    loader = torch.utils.data.DataLoader(items, batch_size=2, collate_fn=collate)
    theirs = image_caption_selection.evaluate(bb.model, loader, bb.tokenizer, "cpu", amp=False)
    assert ours["winoground/text_score"] == pytest.approx(theirs["text_acc"], abs=1e-9)
    assert ours["winoground/image_score"] == pytest.approx(theirs["image_acc"], abs=1e-9)
    assert ours["winoground/group_score"] == pytest.approx(theirs["acc"], abs=1e-9)
    pooled = [ours[f"sugarcrepe_{t}/acc"] for t in selection_data.SUGARCREPE_TASKS]
    assert len(set(pooled)) > 2  # subsets differ: the comparison with clip_benchmark could fail
    assert ours["sugarcrepe_average/acc"] == pytest.approx(sum(pooled) / len(pooled))  # equal sizes: mean


@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_every_head_runs_with_outcomes_that_reproduce_its_metrics(data, tmp_path, loss):
    import heads

    root, cfg, small = data
    names = ",".join(h for h in heads.list_heads())
    config = tmp_path / "loss.yaml"
    config.write_text(small.read_text().replace("train: {", f"train: {{loss: {loss}, "))
    assert run(root, cfg, config, tmp_path, heads=names) == 0
    recs = {r.head.name: r for r in results.load_all(tmp_path)}
    assert all(r.status == "ok" for r in recs.values()), {h: r.error for h, r in recs.items() if r.status != "ok"}
    assert assert_outcomes_reproduce_metrics(tmp_path) > 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert "### SugarCrepe" in board and "### Winoground" in board and "### ARO" in board


def test_ties_are_never_a_win():
    """A constant head: SugarCrepe gives chance (one half, not clip_benchmark's argmax 1.0), Winoground 0."""
    from suites.compositionality import choice_evaluation, winoground_evaluation

    ev = choice_evaluation(torch.zeros(10, 2))
    assert ev.metrics["acc"] == 0.5
    w = winoground_evaluation(torch.zeros(4, 2, 2), torch.zeros(4, 2, 2))
    assert w.metrics == {"text_score": 0.0, "image_score": 0.0, "group_score": 0.0}
    from bench.eval import degenerate

    assert degenerate.check(ev.outcomes, ev.spec) and degenerate.check(w.outcomes, w.spec)


def test_winoground_from_a_hugging_face_copy_equals_the_folder(data, tmp_path):
    from datasets import Dataset

    from bench.data import image_source

    root, _, _ = data
    folder = selection_data.load(root, "winoground")
    rows = {"image_0": [], "image_1": [], "caption_0": [], "caption_1": []}
    for imgs, caps in folder.instances:
        for k in (0, 1):
            rows[f"image_{k}"].append(image_source.open_image(folder.image_paths[imgs[k]]))
            rows[f"caption_{k}"].append(folder.captions[caps[k]])
    Dataset.from_dict(rows).save_to_disk(tmp_path / "wg")
    hf = selection_data.load(root, "winoground", f"hf:{tmp_path / 'wg'}")
    assert hf.captions == folder.captions and hf.instances == folder.instances


@pytest.mark.parametrize("name", ["sugarcrepe_add_att", "aro_vg_attribution", "winoground"])
def test_missing_or_partial_data_fails_in_seconds_with_its_layout(data, tmp_path, capsys, name):
    root, cfg, small = data
    with pytest.raises(DataError, match="Expected layout"):
        selection_data.load(tmp_path, name)
    partial = tmp_path / "partial"
    if name == "winoground":
        make_winoground(partial, n=2)
        (partial / "winoground" / "images" / "ex_1_img_0.png").unlink()
    elif name.startswith("aro_"):
        make_aro(partial)
        (partial / "aro" / "images" / "2300001.jpg").unlink()
    else:
        make_sugarcrepe(partial, per_task=2)
        (partial / "sugar_crepe" / "val2017" / "000000000001.jpg").unlink()
    make_coco_train(partial)
    only = tmp_path / "only.yaml"
    only.write_text(small.read_text().replace("layers: 2,", f"layers: 2, datasets: [{name}],"))
    code = run(partial, cfg, only, tmp_path / "o")
    err = capsys.readouterr().err
    assert code == 2 and "image(s) are missing" in err and "Expected layout" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["filip", "cosine", "flair"])
def test_each_instance_is_scored_on_its_own_block_of_the_full_matrix(name, monkeypatch):
    """Blocks of instances (3 here, to cross block edges) give exactly the full matrix's entries, in both
    directions for a head whose two directions differ."""
    import heads
    import suites.compositionality as comp
    from bench.eval.scoring import encode, score_matrices

    monkeypatch.setattr(comp, "BLOCK", 3)
    torch.manual_seed(0)
    head = heads.get_head(name)(6, 6).eval()
    images, texts = torch.randn(14, 3, 6), torch.randn(14, 4, 6)
    inst_i = torch.arange(14).view(7, 2)
    inst_c = torch.arange(14).flip(0).view(7, 2)
    t = comp.SelectionTest(images, texts, inst_i, inst_c)
    i2t, t2i = comp.CompositionalitySuite.blocks(None, head, t, "cpu")
    with torch.no_grad():
        full_i2t, full_t2i = score_matrices(
            head, encode(head, "image", images, None, "cpu"), encode(head, "text", texts, None, "cpu"), 14, 14
        )
    for k in range(7):
        assert torch.allclose(i2t[k], full_i2t[inst_i[k]][:, inst_c[k]], atol=1e-5)
        assert torch.allclose(t2i[k], full_t2i[inst_i[k]][:, inst_c[k]], atol=1e-5)


def test_aro_reads_each_image_cropped_to_its_box(data):
    from PIL import Image

    from bench.data import image_source

    root, _, _ = data
    entries = json.loads((root / "aro" / "visual_genome_relation.json").read_text())
    ds = selection_data.load(root, "aro_vg_relation")
    assert len(ds.instances) == 12 and ds.instances[3] == ([3], [6, 7])
    assert ds.captions[6:8] == [entries[3]["true_caption"], entries[3]["false_caption"]]  # the true one first
    e = entries[5]
    with Image.open(root / "aro" / "images" / e["image_path"]) as img:  # as ARO's VG_Relation crops
        want = img.convert("RGB").crop((e["bbox_x"], e["bbox_y"], e["bbox_x"] + e["bbox_w"], e["bbox_y"] + e["bbox_h"]))
    got = image_source.open_image(ds.image_paths[5])
    assert got.size == (e["bbox_w"], e["bbox_h"]) and list(got.getdata()) == list(want.getdata())
    assert ds.in_macro == [g != "next to" for g in ds.groups]  # a symmetric relation is left out
    va = selection_data.load(root, "aro_vg_attribution")
    assert sum(va.in_macro) == 26 and set(va.groups) == {"red_wooden", "small_white"}  # 4 cases < 25


def test_clip_frozen_equals_aros_own_evaluation(data, tmp_path):
    """ARO's evaluate_scores and its notebook's macro accuracy, rewritten here from its code: argmax over
    [false, true] of the cropped image's cosine scores, per relation (attribute pair), then the mean."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from bench.features.backbone import Backbone, BackboneSpec

    root, cfg, small = data
    assert run(root, cfg, small, tmp_path, heads="clip_frozen") == 0
    ours = results.read(results.run_path(tmp_path, "compositionality", "clip_frozen")).metrics
    bb = Backbone(BackboneSpec.parse(str(cfg)), layers=2, seed=0)
    for task, group_of in (
        ("relation", lambda e: e["relation_name"]),
        ("attribution", lambda e: "_".join(e["attributes"])),
    ):
        entries = json.loads((root / "aro" / f"visual_genome_{task}.json").read_text())
        correct = []
        for e in entries:
            with Image.open(root / "aro" / "images" / e["image_path"]) as img:
                box = (e["bbox_x"], e["bbox_y"], e["bbox_x"] + e["bbox_w"], e["bbox_y"] + e["bbox_h"])
                image = bb.preprocess(img.convert("RGB").crop(box))[None]
            with torch.no_grad():
                i = torch.nn.functional.normalize(bb.model.encode_image(image), dim=-1)
                t = torch.nn.functional.normalize(
                    bb.model.encode_text(bb.tokenize([e["false_caption"], e["true_caption"]])), dim=-1
                )
            correct.append(int(np.argmax((i @ t.T).numpy()[0])) == 1)
        df = pd.DataFrame({"group": [group_of(e) for e in entries], "correct": correct})
        per = df.groupby("group")["correct"].agg(["mean", "count"])
        if task == "relation":
            per = per[~per.index.isin(selection_data.ARO_SYMMETRIC_RELATIONS)]
        else:
            per = per[per["count"] >= 25]
        assert ours[f"aro_vg_{task}/macro_acc"] == pytest.approx(per["mean"].mean(), abs=1e-9), task
        assert ours[f"aro_vg_{task}/acc"] == pytest.approx(float(np.mean(correct)), abs=1e-9), task
    assert ours["aro_vg_relation/macro_acc"] != ours["aro_vg_relation/acc"]  # the filter matters on this data


def test_aro_has_no_hugging_face_source(data):
    root, _, _ = data
    with pytest.raises(DataError, match="read it from its folder"):
        selection_data.load(root, "aro_vg_relation", "hf:some/copy")
