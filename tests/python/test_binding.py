"""The Python binding (python/graft) over libgraft.so, against stories260K and the graft CLI.

Run by tests/python_binding.sh from CTest: GRAFT_LIB names the built library, GRAFT_BIN the
graft binary (for cross-checks), GRAFT_TEST_DATA the fixtures folder."""

import os
import re
import subprocess

import pytest

import graft

DATA = os.environ.get("GRAFT_TEST_DATA") or os.path.join(os.path.dirname(__file__), "..", "data")
BIN = os.environ.get("GRAFT_BIN")
STORIES = os.path.join(DATA, "stories260K.bin")
HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "include", "graft.h")
PROMPT, TARGET = "Tom had a big red", " kite"


@pytest.fixture()
def model():
    m = graft.Model(STORIES)
    yield m
    m.close()


def cli(*args):
    if not BIN:
        pytest.skip("GRAFT_BIN not set: no CLI to compare with")
    return subprocess.run([BIN, *args], check=True, capture_output=True, text=True).stdout


def test_library_version_matches_header():
    text = open(HEADER).read()
    want = ".".join(re.search(r"#define GRAFT_VERSION_%s (\d+)" % k, text).group(1) for k in ("MAJOR", "MINOR", "PATCH"))
    assert graft.version() == want
    if os.environ.get("GRAFT_LIB"):
        assert graft.library_path() == os.environ["GRAFT_LIB"]


def test_model_tokenize_generate_score(model):
    info = model.info
    assert info["arch"] == "llama" and info["n_layer"] == 5 and info["n_params"] == 260032
    ids = model.tokenize(PROMPT)
    assert len(ids) >= 3 and all(isinstance(i, int) for i in ids)
    assert model.detokenize(ids).strip() == PROMPT
    text = model.generate(PROMPT, max_tokens=8)
    assert text and not text.startswith(TARGET)
    assert model.generate(PROMPT, max_tokens=8) == text  # greedy is deterministic
    sampled = model.generate(PROMPT, max_tokens=8, temperature=1.0, seed=7)
    assert sampled == model.generate(PROMPT, max_tokens=8, temperature=1.0, seed=7)
    s = model.score("Once upon a time, there was a little girl named Lily.")
    assert s["scored"] > 5 and 0 < s["nll"] < 10 and s["ppl"] > 1
    # the same numbers as the command line
    assert cli("generate", "-m", STORIES, "-p", PROMPT, "-n", "8").rstrip("\n") == text
    out = cli("score", "-m", STORIES, "--text", "Once upon a time, there was a little girl named Lily.")
    assert abs(float(re.search(r'"nll":\s*([0-9.eE+-]+)', out).group(1)) - s["nll"]) < 1e-5


def test_errors_carry_grafts_message(model):
    with pytest.raises(graft.GraftError) as e:
        graft.Model("/nonexistent/model.bin")
    assert e.value.status == "io" and "/nonexistent/model.bin" in str(e.value)
    with pytest.raises(graft.GraftError) as e:
        graft.Editor(model, "no-such-method")
    assert e.value.status == "unsupported" and "no-such-method" in e.value.message
    with pytest.raises(graft.GraftError) as e:
        graft.Editor(model, "grace", no_such_option=1)
    assert e.value.status == "invalid" and "no_such_option" in str(e.value)
    with graft.Editor(model, "grace") as ed:
        with pytest.raises(graft.GraftError) as e:
            ed.apply(PROMPT, "")
        assert "target" in str(e.value)
        with pytest.raises(graft.GraftError) as e:
            ed.undo(12345)
        assert "12345" in str(e.value)
        with pytest.raises(ValueError):
            ed.edit(prompts=[PROMPT, "Lily had a pet"], target_new=[TARGET])


def test_easyedit_edit_sequential(model):
    ed = graft.Editor(model, "grace", layer=1)
    assert ed.method == "grace" and ed.options["layer"] == 1 and not ed.edits_weights
    before_loc = model.generate("She was very", max_tokens=4)
    metrics, edited, weights_copy = ed.edit(
        prompts=[PROMPT, "Lily had a pet"], target_new=[TARGET, " frog"],
        ground_truth=[" ball", " dog"], rephrase_prompts=["Tom owned a big red", "Lily took care of her pet"],
        locality_inputs={"neighborhood": {"prompt": ["Once upon a time, there was a little", "She was very"],
                                          "ground_truth": [" girl named", " happy"]}},
        sequential_edit=True)
    assert edited is ed and weights_copy is None and len(metrics) == 2
    for i, m in enumerate(metrics):
        assert m["case_id"] == i and m["time"] > 0
        assert m["requested_rewrite"]["target_new"] in (TARGET, " frog")
        assert m["pre"]["rewrite_acc"][0] < 1.0 and m["post"]["rewrite_acc"] == [1.0]
        assert m["post"]["rewrite_gen"] == [True] and m["graft"]["reproduced"]
        assert "rephrase_acc" in m["pre"] and "rephrase_acc" in m["post"]
        assert "locality" not in m["pre"]
        assert m["post"]["locality"]["neighborhood_acc"] == [1.0]  # GRACE leaves them alone
        assert m["graft"]["loss_after"] < m["graft"]["loss_before"]
    assert ed.live_edits == 2
    assert ed.generate(PROMPT, max_tokens=4).startswith(TARGET)
    assert not model.generate(PROMPT, max_tokens=4).startswith(TARGET)  # activation edits: the editor only
    assert ed.generate("She was very", max_tokens=4) == before_loc
    ed.close()


def test_easyedit_edit_one_at_a_time(model):
    with graft.Editor(model, "grace") as ed:
        metrics, _, _ = ed.edit(PROMPT, TARGET, sequential_edit=False)
        assert metrics[0]["post"]["rewrite_acc"] == [1.0]
        assert ed.live_edits == 0  # each edit is measured alone, then undone
        assert not ed.generate(PROMPT, max_tokens=4).startswith(TARGET)


def test_undo_reopen_and_save(model, tmp_path):
    run, saved = str(tmp_path / "run"), str(tmp_path / "saved")
    before = model.generate(PROMPT, max_tokens=6)
    ed = graft.Editor(model, "grace", run_dir=run)
    r = ed.apply(PROMPT, TARGET)
    assert r["reproduced"] and r["id"] >= 1 and r["iterations"] > 0
    after = ed.generate(PROMPT, max_tokens=6)
    assert after.startswith(TARGET)
    ed.undo(r["id"])
    assert ed.live_edits == 0 and ed.generate(PROMPT, max_tokens=6) == before
    ed.apply(PROMPT, TARGET)
    ed.close()
    # the run folder reopens with its edit replayed, the method read from its journal
    ed = graft.Editor(model, run_dir=run)
    assert ed.method == "grace" and ed.live_edits == 1 and ed.generate(PROMPT, max_tokens=6) == after
    ed.save(saved)  # an activation editor saves an adaptor folder
    ed.close()
    assert os.path.exists(os.path.join(saved, "journal.sqlite"))
    assert cli("generate", "-m", STORIES, "-p", PROMPT, "-n", "6", "--adaptor", saved).rstrip("\n") == after


def test_weight_editor_saves_a_model(model, tmp_path):
    before = model.generate(PROMPT, max_tokens=6)
    ed = graft.Editor(model, "ft")
    assert ed.edits_weights
    r = ed.apply(PROMPT, TARGET)
    assert r["reproduced"]
    edited = model.generate(PROMPT, max_tokens=6)
    assert edited.startswith(TARGET)  # the weights themselves changed
    out = str(tmp_path / "hf")
    ed.save(out)
    with graft.Model(out) as m2:
        assert m2.generate(PROMPT, max_tokens=6) == edited
    with pytest.raises(graft.GraftError) as e:
        ed.save(out)  # never over a model
    assert "already holds a model" in str(e.value)
    ed.undo(r["id"])
    assert model.generate(PROMPT, max_tokens=6) == before
    ed.close()
