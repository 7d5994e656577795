"""The documentation: every table of results is its committed JSON's rendering, and every
`python -m minicl.*` command in README.md and docs/ parses as the shell splits it and composes
with Hydra (keys, values and quoting checked)."""

import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Transformer

from minicl import compare, diversity, mechanism, ship
from minicl.config import CONF, check_config, register_schemas
from minicl.reproduce import checked_request, claim_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "examples" / "playground.ipynb"]
HYDRA_APPS = {"train", "evaluate", "explore", "reproduce"}


def load_render(root: Path = ROOT):
    spec = importlib.util.spec_from_file_location("render", root / "docs" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_committed_table_is_its_jsons_rendering():
    assert load_render().stale() == []


def test_a_table_edited_by_hand_or_a_changed_result_is_caught(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "minicl" / "shipped", tmp_path / "minicl" / "shipped")
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    render = load_render(tmp_path)
    page = next(p for p in render.pages() if render.BLOCK.search(p.read_text()))
    text = page.read_text()
    block = render.BLOCK.search(text)
    digit = re.search(r"\d", block[4])
    start = block.start(4) + digit.start()
    page.write_text(text[:start] + str((int(digit[0]) + 1) % 10) + text[start + 1 :])  # one digit changed by hand
    assert render.stale() == [f"{page.relative_to(tmp_path)}: {block[2]}"]
    render.main([])  # rendering again restores it
    assert page.read_text() == text and render.stale() == []


def results_jsons() -> list[Path]:
    return sorted((ROOT / "docs" / "results").rglob("*.json"))


@pytest.mark.parametrize("path", results_jsons(), ids=lambda p: str(p.relative_to(ROOT / "docs" / "results")))
def test_every_results_json_names_the_command_and_the_commit_that_wrote_it(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict) and str(data.get("command", "")).startswith("python "), path
    assert re.fullmatch(r"[0-9a-f]{40}", str(data.get("commit"))), f"{path}: commit {data.get('commit')!r}"


@pytest.mark.parametrize("path", results_jsons(), ids=lambda p: str(p.relative_to(ROOT / "docs" / "results")))
def test_every_results_json_declares_its_kind(path):
    assert json.loads(path.read_text()).get("kind") in load_render().RENDERERS, path


def test_a_json_without_a_kind_is_refused_whatever_its_keys(tmp_path):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    results = tmp_path / "docs" / "results"
    (results / "by_hand.json").write_text(json.dumps({"columns": ["a"], "rows": [[1]]}))
    claims = json.loads((results / "claims-cpu.json").read_text())
    (results / "no_kind.json").write_text(json.dumps({k: v for k, v in claims.items() if k != "kind"}))
    (results / "other_kind.json").write_text(json.dumps(claims | {"kind": "unknown"}))
    render = load_render(tmp_path)
    for name, match in (("by_hand", "without a `kind`"), ("no_kind", "without a `kind`"), ("other_kind", "kinds")):
        with pytest.raises(ValueError, match=match):
            render.render(f"results/{name}.json", None)
    assert render.render("results/claims-cpu.json", "seeds").startswith("| claim |")


MUTATIONS = {  # a number each table reads, in a committed JSON: changing it must make a page stale
    "results/claims-cpu.json": lambda d: d["claims"][0]["runs"][0]["errors"]["transformer"]["10"],
    "results/real-tables.json": lambda d: d["results"]["diabetes"]["40"]["ICLRegressor"]["r2"],  # the splits' R²
    "results/explore/quick-noise.json": lambda d: d["results"][0]["models"]["transformer"]["mean"],
    "results/algorithms/linear_deep.json": lambda d: d["settings"]["standard"]["layers"][0]["error"],
    "results/mixtures/noise_mixture-seed1.json": lambda d: d["settings"]["component_0"]["models"]["transformer"][
        "mean"
    ],
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_a_changed_number_in_a_results_json_fails_the_render_check(tmp_path, name):
    for folder in ("docs", "minicl/shipped", "benchmarks/results", "conf"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    render = load_render(tmp_path)
    assert render.stale() == []
    path = tmp_path / "docs" / name
    data = json.loads(path.read_text())
    numbers = MUTATIONS[name](data)
    numbers[:] = [x + 0.1 for x in numbers]
    path.write_text(json.dumps(data))
    assert render.stale(), f"changing {name} left every page as it was"  # it was [] before the change


def spans(text: str) -> list[str]:
    """The shell code of a page: each bash (or unlabelled) fenced block, and each inline code span."""
    out, fence, block = [], None, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fence is None:
                fence, block = line.strip("` \n"), []
            else:
                out += ["\n".join(block)] if fence in ("", "bash", "sh") else []
                fence = None
        elif fence is not None:
            block.append(line)
        else:
            out += re.findall(r"`([^`]+)`", line)
    return out


def page_text(page: Path) -> str:
    """A page's text; for the notebook, its markdown cells, where it writes its commands."""
    if page.suffix == ".ipynb":
        cells = json.loads(page.read_text())["cells"]
        return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    return page.read_text()


def commands() -> list[tuple[str, str]]:
    """(page, command) for every `python -m minicl.*` command in the pages' shell code."""
    found = []
    for page in PAGES:
        for span in spans(page_text(page)):
            for line in span.replace("\\\n", " ").splitlines():
                for part in re.split(r"&&|;|\|(?!\w)", line.split(" #")[0]):
                    if re.search(r"-m minicl\.\w+", part):
                        found.append((str(page.relative_to(ROOT)), part.strip()))
    return found


def test_the_docs_show_commands():
    assert len(commands()) >= 30


@pytest.mark.parametrize("where, command", commands(), ids=[f"{w}: {c[:60]}" for w, c in commands()])
def test_every_documented_command_splits_and_composes(where, command):
    words = shlex.split(command)  # as the shell splits it: an unquoted space or brace fails here
    for word in shlex.split(command, posix=False):  # zsh globs an unquoted [...] and fails on no match
        assert "[" not in word or word[0] in "'\"", f"{where}: quote {word}"
    at = next(i for i, w in enumerate(words) if w == "-m" and i + 1 < len(words) and words[i + 1].startswith("minicl."))
    module, args = words[at + 1].removeprefix("minicl."), [w for w in words[at + 2 :] if w != "-m"]
    if module == "explore":
        assert any(a.startswith("run=") for a in args), f"{where}: explore needs run=: {command}"
    if module in HYDRA_APPS:
        overrides = OverridesParser.create().parse_overrides(args)  # Hydra's grammar: quoting, sweeps, lists
        chosen = [o.input_line for o in overrides if not o.is_sweep_override()]
        chosen += [
            f"{o.get_key_element()}={next(o.sweep_iterator(transformer=Transformer.encode))}"  # a sweep's first job
            for o in overrides
            if o.is_sweep_override()
        ]
        chosen = [o for o in chosen if not o.lstrip("+~").startswith("hydra")]  # Hydra's own settings: parsed above
        register_schemas()
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = compose(config_name=module, overrides=chosen)
        if module == "train":
            check_config(cfg)
        if module == "reproduce":
            seeds = cfg.seeds if isinstance(cfg.seeds, int) else list(cfg.seeds)
            checked_request(cfg.scale, list(cfg.overrides), cfg.source, seeds, cfg.jobs)
            for claim in cfg.claims:
                claim_config(claim, cfg.scale, [*cfg.overrides, "trainer.seed=0"])
    elif module == "compare":
        assert all(key in compare.OPTIONS for key, sep, _ in (a.partition("=") for a in args) if sep), command
    elif module == "ship":
        assert set(args) <= set(ship.SOURCES), command
    elif module == "convert":
        assert len(args) == 2, command
    elif module == "mechanism":
        mechanism.parser().parse_args(args)
    elif module == "diversity":
        diversity.parser().parse_args(args)
    else:
        assert module in {"probe"}, f"{where}: unknown command {command}"


def written(words: list[str]) -> list[str]:
    """The run directories a command writes: hydra.run.dir / hydra.sweep.dir / reproduce's out=."""
    keys = ("hydra.run.dir=", "hydra.sweep.dir=", "out=")
    return [w.split("=", 1)[1].rstrip("/") for w in words if w.startswith(keys)]


def read(words: list[str]) -> list[str]:
    """The run directories a command reads: run=, and compare's directories."""
    runs = [w.split("=", 1)[1] for w in words if w.startswith("run=")]
    if "minicl.compare" in words:
        runs += [w for w in words[words.index("minicl.compare") + 1 :] if "=" not in w and not w.startswith("-")]
    if "minicl.mechanism" in words and words[words.index("minicl.mechanism") + 1] in ("masks", "dynamics"):
        args = mechanism.parser().parse_args(words[words.index("minicl.mechanism") + 1 :])
        runs += args.inputs
    if "minicl.diversity" in words:
        runs += diversity.parser().parse_args(words[words.index("minicl.diversity") + 1 :]).runs
    placeholder = ("pretrained:", "path/to/")  # a shipped model, another code's run; RUN below
    return [r.rstrip("/") for r in runs if not r.startswith(placeholder) and r != r.upper()]


def test_each_run_a_command_reads_is_one_an_earlier_command_writes():
    """Read in order (README first), every run= or compare directory is a directory an earlier
    documented command writes, or inside one."""
    writes, missing = [], []
    for where, command in sorted(commands(), key=lambda wc: wc[0] != "README.md"):
        words = shlex.split(command)
        for run in read(words):
            if not any(run == w or run.startswith(w + "/") for w in writes):
                missing.append(f"{where}: {command} reads {run}, which no command before it writes")
        writes += written(words)
    assert missing == []


def test_the_citation_file_is_valid_cff():
    """CITATION.cff against the Citation File Format 1.2.0 schema (tests/data, as cffconvert 2.0.0
    ships it; CC-BY-4.0, citation-file-format.github.io)."""
    import jsonschema  # the dev extra's
    import yaml  # omegaconf's

    schema = json.loads((ROOT / "tests" / "data" / "citation-file-format-1.2.0.schema.json").read_text())
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    jsonschema.validate(citation, schema)
    with pytest.raises(jsonschema.ValidationError):  # the check can fail: without authors, CFF is invalid
        jsonschema.validate({k: v for k, v in citation.items() if k != "authors"}, schema)
