"""graft from Python: lifelong model editing through libgraft.so (ctypes, no compiler step).

    import graft
    model = graft.Model("tests/data/stories260K.bin")
    print(model.generate("Tom had a big red", max_tokens=8))
    editor = graft.Editor(model, "grace")                    # options as keywords: layer=1, ...
    metrics, edited, _ = editor.edit(prompts=["Tom had a big red"], target_new=[" kite"])
    print(editor.generate("Tom had a big red", max_tokens=8))  # " kite. ..."

Editor.edit takes EasyEdit's BaseEditor.edit arguments and returns its per-edit metric
dicts (docs/PYTHON.md). Every failure in graft raises graft.GraftError with graft's own
message (graft_last_error()).

The library is found, in order, at $GRAFT_LIB (the file, or a folder holding it), beside
this package, in the build/ folder of the source tree the package sits in, and on the
system's library path (ldconfig, LD_LIBRARY_PATH).
"""

import ctypes
import ctypes.util
import glob
import json
import os
import time

__all__ = ["GraftError", "Model", "Editor", "library_path", "version"]

# graft_status, in graft.h's order
_STATUS = ["ok", "io", "format", "invalid", "nomem", "unsupported", "range", "internal", "edit_failed"]
_INVALID, _UNSUPPORTED = 3, 5


class GraftError(Exception):
    """A graft call failed. `status` is graft's status name ("io", "format", "invalid",
    "nomem", "unsupported", "range", "internal", "edit_failed"), `code` its number and
    `message` graft's message, which names the file, offset or field at fault."""

    def __init__(self, code, message):
        self.code = code
        self.status = _STATUS[code] if 0 <= code < len(_STATUS) else str(code)
        self.message = message
        super().__init__(message or self.status)


# ------------------------------------------------------------------ the library

class _GenOpts(ctypes.Structure):
    _fields_ = [("max_new_tokens", ctypes.c_int), ("temperature", ctypes.c_float), ("top_p", ctypes.c_float),
                ("seed", ctypes.c_uint64), ("stop_at_eos", ctypes.c_int)]


class _ModelInfo(ctypes.Structure):
    _fields_ = [("arch", ctypes.c_int), ("arch_name", ctypes.c_char_p), ("format", ctypes.c_char_p),
                ("dtype", ctypes.c_char_p)] + \
               [(f, ctypes.c_int) for f in ("n_layer", "d_model", "n_head", "n_kv_head", "head_dim", "d_ff",
                                            "vocab_size", "n_ctx", "tied_embeddings")] + \
               [("n_params", ctypes.c_int64), ("mapped_bytes", ctypes.c_size_t), ("heap_bytes", ctypes.c_size_t)]


class _EditResult(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int64), ("reproduced", ctypes.c_int), ("iterations", ctypes.c_int),
                ("seconds", ctypes.c_double), ("loss_before", ctypes.c_double), ("loss_after", ctypes.c_double)]


class _EvalResult(ctypes.Structure):
    _fields_ = [("tf_acc", ctypes.c_double), ("gen_match", ctypes.c_int), ("n_target", ctypes.c_int)]


_P = ctypes.c_void_p
_S = ctypes.c_char_p
_PINT = ctypes.POINTER(ctypes.c_int)
_SIZE = ctypes.c_size_t
_SIGNATURES = {
    # name: (restype, argtypes); every function returning graft_status has restype c_int
    "graft_version": (_S, []),
    "graft_status_str": (_S, [ctypes.c_int]),
    "graft_last_error": (_S, []),
    "graft_clear_error": (None, []),
    "graft_free": (None, [_P]),
    "graft_set_threads": (None, [ctypes.c_int]),
    "graft_get_threads": (ctypes.c_int, []),
    "graft_gemm_backend": (_S, []),
    "graft_tokenizer_load": (ctypes.c_int, [_S, ctypes.POINTER(_P)]),
    "graft_tokenize": (ctypes.c_int, [_P, _S, _SIZE, ctypes.POINTER(_PINT), ctypes.POINTER(_SIZE)]),
    "graft_detokenize": (ctypes.c_int, [_P, _PINT, _SIZE, ctypes.POINTER(_P), ctypes.POINTER(_SIZE)]),
    "graft_model_load": (ctypes.c_int, [_S, ctypes.POINTER(_P)]),
    "graft_model_free": (None, [_P]),
    "graft_model_get_info": (None, [_P, ctypes.POINTER(_ModelInfo)]),
    "graft_model_tokenizer": (_P, [_P]),
    "graft_model_set_tokenizer": (None, [_P, _P]),
    "graft_gen_opts_default": (None, [ctypes.POINTER(_GenOpts)]),
    "graft_encode_prompt": (ctypes.c_int, [_P, _S, ctypes.POINTER(_PINT), ctypes.POINTER(_SIZE)]),
    "graft_score_text": (ctypes.c_int, [_P, _S, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(_SIZE)]),
    "graft_generate_text": (ctypes.c_int, [_P, _P, _S, ctypes.POINTER(_GenOpts), ctypes.POINTER(_P),
                                           ctypes.POINTER(_SIZE)]),
    "graft_session_open": (ctypes.c_int, [_P, _S, _S, _S, ctypes.POINTER(_P)]),
    "graft_session_free": (None, [_P]),
    "graft_session_method": (_S, [_P]),
    "graft_session_live_edits": (ctypes.c_int64, [_P]),
    "graft_session_edits_weights": (ctypes.c_int, [_P]),
    "graft_session_options": (ctypes.c_int, [_P, ctypes.POINTER(_P)]),
    "graft_session_edit": (ctypes.c_int, [_P, _S, _S, _S, ctypes.POINTER(_EditResult)]),
    "graft_session_undo": (ctypes.c_int, [_P, ctypes.c_int64]),
    "graft_session_save": (ctypes.c_int, [_P, _S, _S]),
    "graft_evaluate": (ctypes.c_int, [_P, _P, ctypes.POINTER(_S), ctypes.POINTER(_S), _SIZE,
                                      ctypes.POINTER(_EvalResult)]),
    "graft_predict": (ctypes.c_int, [_P, _P, _S, _S, ctypes.POINTER(_PINT), ctypes.POINTER(_SIZE)]),
}

_lib = None
_lib_path = None


def _candidates():
    env = os.environ.get("GRAFT_LIB")
    if env:
        # named explicitly: nothing else is tried
        if os.path.isdir(env):
            return sorted(glob.glob(os.path.join(env, "libgraft.so*")))[:1] or [os.path.join(env, "libgraft.so")]
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = sorted(glob.glob(os.path.join(here, "libgraft.so*")))
    # a source checkout: python/graft/ -> the tree's build/ (what `make` builds)
    out += [os.path.join(here, "..", "..", "build", "libgraft.so")]
    found = ctypes.util.find_library("graft")
    out += [found] if found else []
    out += ["libgraft.so.0"]  # the dynamic loader's own search (LD_LIBRARY_PATH, ldconfig)
    return out


def _load():
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    # spinning OpenMP pools fight OpenBLAS's on small machines (the graft CLI
    # sets the same); libgomp reads this when it is loaded, so set it first
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (absent)")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
            continue
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        _lib, _lib_path = lib, path
        return lib
    raise OSError("graft: libgraft.so not found; set GRAFT_LIB to its path (build it with `make`). Tried: "
                  + "; ".join(tried))


def _check(status):
    if status != 0:
        lib = _load()
        raise GraftError(status, (lib.graft_last_error() or b"").decode("utf-8", "replace"))


def _b(s, what):
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    if not isinstance(s, str):
        raise TypeError("%s: want a str, got %s" % (what, type(s).__name__))
    return s.encode("utf-8")


def _take_ints(ptr, n):
    try:
        return [ptr[i] for i in range(n)]
    finally:
        _load().graft_free(ctypes.cast(ptr, _P))


def _take_text(ptr, n):
    try:
        return ctypes.string_at(ptr, n).decode("utf-8", "replace")
    finally:
        _load().graft_free(ptr)


def library_path():
    """The path libgraft was loaded from."""
    _load()
    return _lib_path


def version():
    """libgraft's version, "MAJOR.MINOR.PATCH"."""
    return _load().graft_version().decode()


def _gen_opts(max_tokens, temperature, top_p, seed, stop_at_eos):
    o = _GenOpts()
    _load().graft_gen_opts_default(ctypes.byref(o))
    o.max_new_tokens = int(max_tokens)
    o.temperature = float(temperature)
    o.top_p = float(top_p)
    if seed is not None:
        o.seed = int(seed)
    o.stop_at_eos = 1 if stop_at_eos else 0
    return o


# ------------------------------------------------------------------ models

class _Handle:
    """A graft object behind a C handle: closed explicitly, by `with`, or when collected."""

    _what = "object"

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _handle(self):
        if not self._h:
            raise GraftError(_INVALID, "%s: already closed" % self._what)
        return self._h


class Model(_Handle):
    """A model loaded by graft: a Hugging Face folder (config.json + model.safetensors) or a
    llama2.c .bin or a GGUF file. `tokenizer` names a tokenizer file or folder when none lies beside it."""

    _what = "model"

    def __init__(self, path, tokenizer=None):
        lib = _load()
        self._h = None
        h = _P()
        _check(lib.graft_model_load(_b(os.fspath(path), "path"), ctypes.byref(h)))
        self._h = h
        self.path = os.fspath(path)
        self._sessions = 0
        if tokenizer is not None:
            t = _P()
            _check(lib.graft_tokenizer_load(_b(os.fspath(tokenizer), "tokenizer"), ctypes.byref(t)))
            lib.graft_model_set_tokenizer(self._h, t)

    def close(self):
        """Free the model (also done when it is garbage-collected). Editors on it must be
        closed first."""
        if self._h and self._sessions:
            raise GraftError(_INVALID, "model: %d editor(s) still open on it; close them first" % self._sessions)
        if self._h:
            _load().graft_model_free(self._h)
            self._h = None

    @property
    def info(self):
        """Architecture and shape: arch, format, dtype, n_layer, d_model, ..., n_params."""
        i = _ModelInfo()
        _load().graft_model_get_info(self._handle(), ctypes.byref(i))
        d = {f: getattr(i, f) for f, _ in _ModelInfo._fields_}
        for k in ("arch_name", "format", "dtype"):
            d[k] = d[k].decode() if d[k] else None
        d["arch"] = d.pop("arch_name")
        return d

    def _tok(self):
        t = _load().graft_model_tokenizer(self._handle())
        if not t:
            raise GraftError(_INVALID, "%s: the model has no tokenizer; pass tokenizer=PATH" % self.path)
        return t

    def tokenize(self, text):
        """The tokenizer's ids for text (no BOS added)."""
        data = _b(text, "text")
        ids, n = _PINT(), _SIZE()
        _check(_load().graft_tokenize(self._tok(), data, len(data), ctypes.byref(ids), ctypes.byref(n)))
        return _take_ints(ids, n.value)

    def detokenize(self, ids):
        """The text of a list of ids."""
        ids = list(ids)
        arr = (ctypes.c_int * max(len(ids), 1))(*ids)
        text, n = _P(), _SIZE()
        _check(_load().graft_detokenize(self._tok(), arr, len(ids), ctypes.byref(text), ctypes.byref(n)))
        return _take_text(text, n.value)

    def generate(self, prompt, max_tokens=64, temperature=0.0, top_p=1.0, seed=None, stop_at_eos=True):
        """The continuation of prompt (greedy when temperature is 0), as `graft generate` prints it."""
        return _generate(self, None, prompt, max_tokens, temperature, top_p, seed, stop_at_eos)

    def score(self, text):
        """Teacher-forced score of text: {"scored": tokens predicted, "nll": mean NLL in nats,
        "ppl": perplexity}, as `graft score` reports it."""
        nll, n = ctypes.c_double(), _SIZE()
        _check(_load().graft_score_text(self._handle(), _b(text, "text"), ctypes.byref(nll), ctypes.byref(n)))
        import math
        return {"scored": n.value, "nll": nll.value, "ppl": math.exp(nll.value)}

    def __repr__(self):
        return "graft.Model(%r)" % self.path


def _generate(model, session, prompt, max_tokens, temperature, top_p, seed, stop_at_eos):
    o = _gen_opts(max_tokens, temperature, top_p, seed, stop_at_eos)
    text, n = _P(), _SIZE()
    _check(_load().graft_generate_text(model._handle(), session, _b(prompt, "prompt"), ctypes.byref(o),
                                       ctypes.byref(text), ctypes.byref(n)))
    return _take_text(text, n.value)


# ------------------------------------------------------------------ editors

def _as_list(x, n, what):
    """EasyEdit accepts a str where a list of one is meant."""
    if x is None:
        return None
    if isinstance(x, str):
        x = [x]
    x = list(x)
    if len(x) != n:
        raise ValueError("%s: %d given for %d prompts" % (what, len(x), n))
    return x


class Editor(_Handle):
    """An editing session on a model: a method ("grace", "melo", "mend", "rome", "memit",
    "emmet", "ft", "ftl", "ewc") with its options (keywords, graft's option names: see
    `graft edit --help` and docs/), every edit journaled. run_dir keeps the journal in a
    folder (reopened with its edits when it already holds one; method may then be None);
    without it the journal lives in a temporary folder removed on close().

    Activation editors (grace, melo) act only through this editor: use editor.generate().
    Weight editors write into the model's weights, so model.generate() sees their edits too."""

    _what = "editor"

    def __init__(self, model, method=None, run_dir=None, **options):
        if not isinstance(model, Model):
            raise TypeError("model: want a graft.Model")
        lib = _load()
        self._h = None
        self.model = model
        opts = json.dumps(options) if options else None
        h = _P()
        _check(lib.graft_session_open(model._handle(), _b(method, "method"), _b(opts, "options"),
                                      _b(os.fspath(run_dir) if run_dir is not None else None, "run_dir"),
                                      ctypes.byref(h)))
        self._h = h
        self.run_dir = run_dir
        model._sessions += 1

    def close(self):
        """Close the session (its temporary journal, if any, is removed). The model's weights
        keep what weight editors wrote."""
        if self._h:
            _load().graft_session_free(self._h)
            self._h = None
            self.model._sessions -= 1

    @property
    def method(self):
        return _load().graft_session_method(self._handle()).decode()

    @property
    def live_edits(self):
        """Edits applied and not undone."""
        return _load().graft_session_live_edits(self._handle())

    @property
    def edits_weights(self):
        """True for weight editors (their edits are in the model's weights)."""
        return bool(_load().graft_session_edits_weights(self._handle()))

    @property
    def options(self):
        """Every option of the method, defaults and derived values filled in."""
        p = _P()
        _check(_load().graft_session_options(self._handle(), ctypes.byref(p)))
        return json.loads(_take_text(p, len(ctypes.string_at(p))))

    def apply(self, prompt, target, subject=None):
        """One edit: after prompt the model should say target. Returns {"id", "reproduced",
        "iterations", "seconds", "loss_before", "loss_after"}; "id" is what undo() takes."""
        r = _EditResult()
        _check(_load().graft_session_edit(self._handle(), _b(prompt, "prompt"), _b(target, "target"),
                                          _b(subject, "subject"), ctypes.byref(r)))
        return {"id": r.id, "reproduced": bool(r.reproduced), "iterations": r.iterations, "seconds": r.seconds,
                "loss_before": r.loss_before, "loss_after": r.loss_after}

    def undo(self, edit_id):
        """Undo an edit by its id."""
        _check(_load().graft_session_undo(self._handle(), int(edit_id)))

    def save(self, path, dtype=None):
        """Weight editors: write the edited model as a Hugging Face folder (dtype "f32",
        "f16" or "bf16"). Activation editors: write an adaptor folder (a copy of the journal)
        that Editor(model, run_dir=path) or `graft generate --adaptor path` reopens."""
        _check(_load().graft_session_save(self._handle(), _b(os.fspath(path), "path"), _b(dtype, "dtype")))

    def generate(self, prompt, max_tokens=64, temperature=0.0, top_p=1.0, seed=None, stop_at_eos=True):
        """The continuation of prompt through the editor."""
        return _generate(self.model, self._handle(), prompt, max_tokens, temperature, top_p, seed, stop_at_eos)

    def evaluate(self, prompts, targets, unedited=False):
        """For each (prompt, target): {"tf_acc": teacher-forced token accuracy, "gen_match":
        greedy generation gives exactly the target, "n_target": target tokens}. unedited=True
        measures the model without this editor (for weight editors, the model as it now is)."""
        prompts, targets = list(prompts), list(targets)
        if len(prompts) != len(targets):
            raise ValueError("evaluate: %d prompts, %d targets" % (len(prompts), len(targets)))
        n = len(prompts)
        if n == 0:
            return []
        P = (_S * n)(*[_b(p, "prompt") for p in prompts])
        T = (_S * n)(*[_b(t, "target") for t in targets])
        res = (_EvalResult * n)()
        _check(_load().graft_evaluate(self.model._handle(), None if unedited else self._handle(), P, T, n, res))
        return [{"tf_acc": r.tf_acc, "gen_match": bool(r.gen_match), "n_target": r.n_target} for r in res]

    def predict(self, prompt, target, unedited=False):
        """The teacher-forced argmax ids at each of target's positions after prompt."""
        ids, n = _PINT(), _SIZE()
        _check(_load().graft_predict(self.model._handle(), None if unedited else self._handle(),
                                     _b(prompt, "prompt"), _b(target, "target"), ctypes.byref(ids), ctypes.byref(n)))
        return _take_ints(ids, n.value)

    # -------------------------------------------------------------- EasyEdit's interface

    def _quality(self, request):
        """EasyEdit's compute_edit_quality for one request: token accuracies, and the
        locality predictions to compare before and after."""
        rw = self.evaluate([request["prompt"]], [request["target_new"]])[0]
        out = {"rewrite_acc": [rw["tf_acc"]], "rewrite_gen": [rw["gen_match"]], "portability": {}, "locality": {}}
        if request.get("rephrase_prompt") is not None:
            out["rephrase_acc"] = [self.evaluate([request["rephrase_prompt"]], [request["target_new"]])[0]["tf_acc"]]
        for key, loc in request["locality"].items():
            prompts = loc["prompt"] if isinstance(loc["prompt"], list) else [loc["prompt"]]
            truths = loc["ground_truth"] if isinstance(loc["ground_truth"], list) else [loc["ground_truth"]]
            out["locality"][key + "_output"] = [self.predict(p, t) for p, t in zip(prompts, truths)]
        return out

    def edit(self, prompts, target_new, ground_truth=None, rephrase_prompts=None, locality_inputs=None,
             portability_inputs=None, subject=None, sequential_edit=True, verbose=False, **kwargs):
        """EasyEdit's BaseEditor.edit: apply target_new[i] after prompts[i] and measure, as
        EasyEdit does, before and after: rewrite_acc (teacher-forced token accuracy of the
        target), rephrase_acc (the same after rephrase_prompts[i]) and, per locality key,
        the share of locality predictions unchanged by editing ("<key>_acc", post only).
        sequential_edit=True measures after all edits (they stay); False measures each edit
        alone and undoes it. Returns (metrics, self, None) like EasyEdit's (metrics,
        edited_model, weights_copy); each metric dict also has "graft": the edit's id,
        reproduced, iterations, losses, and "rewrite_gen" (exact-match generation)."""
        if portability_inputs:
            raise GraftError(_UNSUPPORTED, "portability_inputs: not measured by graft (pass None)")
        for k in kwargs:
            if k not in ("keep_original_weight", "test_generation", "summary_metrics", "eval_metric"):
                raise TypeError("edit() got an unexpected keyword argument %r" % k)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        n = len(prompts)
        target_new = _as_list(target_new, n, "target_new")
        ground_truth = _as_list(ground_truth, n, "ground_truth") or ["<|endoftext|>"] * n
        rephrase_prompts = _as_list(rephrase_prompts, n, "rephrase_prompts")
        subject = _as_list(subject, n, "subject")
        requests = []
        for i in range(n):
            r = {"prompt": prompts[i], "target_new": target_new[i], "ground_truth": ground_truth[i],
                 "portability": {}, "locality": {}}
            if subject is not None:
                r["subject"] = subject[i]
            if rephrase_prompts is not None:
                r["rephrase_prompt"] = rephrase_prompts[i]
            for key, loc in (locality_inputs or {}).items():
                lp = _as_list(loc["prompt"], n, "locality_inputs[%r]['prompt']" % key)
                lg = _as_list(loc["ground_truth"], n, "locality_inputs[%r]['ground_truth']" % key)
                r["locality"][key] = {"prompt": lp[i], "ground_truth": lg[i]}
            requests.append(r)

        metrics = [{"case_id": i, "requested_rewrite": r, "pre": self._quality(r)} for i, r in enumerate(requests)]

        def post(i):
            m = metrics[i]
            m["post"] = self._quality(requests[i])
            for key in requests[i]["locality"]:
                before = m["pre"]["locality"].pop(key + "_output")
                after = m["post"]["locality"].pop(key + "_output")
                m["post"]["locality"][key + "_acc"] = [
                    sum(a == b for a, b in zip(x, y)) / max(len(x), 1) for x, y in zip(after, before)]

        for i, r in enumerate(requests):
            t0 = time.time()
            res = self.apply(r["prompt"], r["target_new"], r.get("subject"))
            metrics[i]["time"] = time.time() - t0
            metrics[i]["graft"] = res
            if verbose:
                print("graft: edit %d (%r -> %r): %s in %.2f s" % (
                    i, r["prompt"], r["target_new"], "took" if res["reproduced"] else "did NOT take",
                    metrics[i]["time"]))
            if not sequential_edit:
                post(i)
                self.undo(res["id"])
        if sequential_edit:
            for i in range(n):
                post(i)
        for m in metrics:
            m["pre"].pop("locality", None)
        return metrics, self, None

    def __repr__(self):
        return "graft.Editor(%s, %d live edits)" % (self.method, self.live_edits) if self._h else "graft.Editor(closed)"
