"""Model files: what ``extends`` may name, and proposals that override one path of a preset."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

import tcsim
from tcsim import presets
from tcsim.errors import ConfigError, TcsimError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "h100_f16_proposal.toml"


def _write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


# ---- what extends may name (issue 15.12) -------------------------------------------------------

@pytest.mark.parametrize("target", ["../../..", "../models/h100", "/etc/passwd", "h100.toml",
                                    "./h100", "tcsim/../h100"])
def test_extends_refuses_anything_but_a_preset_name(tmp_path, target):
    """A relative or absolute path in ``extends`` is never followed out of (or into) models/."""
    # a TOML file that a path escaping models/ would reach, to show it is not read
    (tmp_path / "sneaky.toml").write_text('name = "sneaky"\npaths = []\n')
    model = _write(tmp_path, "p.toml", f'extends = "{target}"\nname = "p"\n')
    with pytest.raises(ConfigError, match=r"p\.toml: extends: .*not a preset name"):
        tcsim.load_model(model)


def test_extends_does_not_reach_a_file_outside_models(tmp_path):
    """The reproduction of 15.12: extends = '<relative path to a .toml outside models/>'."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.toml").write_text('name = "evil"\ndescription = "read from outside"\n'
                                       '[[paths]]\ninputs = ["fp16"]\noutput = "fp32"\n'
                                       'status = "unexplained"\n')
    models = Path(str(presets.preset_dir()))
    target = os.path.relpath(outside / "evil", models)
    assert target.startswith("..")
    assert (models / f"{target}.toml").resolve() == (outside / "evil.toml").resolve()
    model = _write(tmp_path, "p.toml", f'extends = "{target}"\nname = "p"\n')
    with pytest.raises(ConfigError, match="not a preset name"):
        tcsim.load_model(model)


@pytest.mark.parametrize("target", ["H100", "h100", "H200"])
def test_extends_of_a_preset_name_ignores_case_as_load_model_does(tmp_path, target):
    model = tcsim.load_model(_write(tmp_path, "p.toml", f'extends = "{target}"\nname = "p"\n'))
    assert model.paths == tcsim.load_model(target).paths
    assert tcsim.load_model("H100") == tcsim.load_model("h100")


def test_extends_must_be_a_string(tmp_path):
    with pytest.raises(ConfigError, match="extends: must be a preset name"):
        tcsim.load_model(_write(tmp_path, "p.toml", 'extends = 3\nname = "p"\n'))


def test_unknown_preset_in_extends_lists_the_presets(tmp_path):
    with pytest.raises(ConfigError, match=r"'h900' is not a preset name \(presets: a100, a2"):
        tcsim.load_model(_write(tmp_path, "p.toml", 'extends = "h900"\nname = "p"\n'))


def test_errors_are_tcsim_errors(tmp_path):
    with pytest.raises(TcsimError):
        tcsim.load_model(_write(tmp_path, "p.toml", 'extends = "../x"\nname = "p"\n'))


# ---- proposals: extends plus an override of one path (issue 16.7) ------------------------------

def _hardware(path) -> dict:
    """The hardware fields of a path (what the simulation uses)."""
    return path.datapath().model_dump()


def test_worked_example_changes_only_fraction_bits_of_one_path():
    h100 = tcsim.load_model("h100")
    prop = tcsim.load_model(EXAMPLE)
    assert prop.name == "h100-f16"
    assert len(prop.paths) == len(h100.paths)
    changed = [i for i, (p, q) in enumerate(zip(h100.paths, prop.paths)) if p != q]
    assert len(changed) == 1
    i = changed[0]
    old, new = h100.paths[i], prop.paths[i]
    assert (new.name, new.inputs, new.output) == ("wgmma", ("e4m3", "e5m2"), "fp32")
    assert old.fraction_bits == 13 and new.fraction_bits == 16
    assert _hardware(new) == _hardware(old) | {"fraction_bits": 16}
    # inherited provenance stays; the changed field carries the proposal's note
    for key, note in old.provenance.items():
        if key != "fraction_bits":
            assert new.provenance[key] == note
    assert new.provenance["fraction_bits"].startswith("proposal")
    assert new.status == "proposal" and old.status == "explained"
    # the simulation sees it: beside 1*1 (E = 0), eight products 2^-16 are truncated to 0 on
    # the grid 2^-13 but kept on 2^-16, where they add up to 2^-13 (within the 14-bit output)
    a = np.array([[1.0] + [2.0 ** -8] * 8])
    kw = dict(a_format="e4m3", b_format="e4m3")
    assert tcsim.mma(a, a.T, model=h100, **kw)[0, 0] == 1.0
    assert tcsim.mma(a, a.T, model=prop, **kw)[0, 0] == np.float32(1 + 2.0 ** -13)


def test_override_keeps_the_users_note(tmp_path):
    model = tcsim.load_model(_write(tmp_path, "p.toml", """
extends = "h100"
name = "p"
[[paths]]
name = "wgmma"
output = "fp32"
fraction_bits = 20
output_precision = 21
[paths.provenance]
fraction_bits = "what-if: a wider aligner"
"""))
    path = model.find_path("e4m3", "e4m3", "fp32")
    assert path.fraction_bits == 20 and path.output_precision == 21
    assert path.provenance["fraction_bits"] == "what-if: a wider aligner"
    assert path.provenance["output_precision"].startswith("proposal")


def test_an_override_that_matches_nothing_is_a_clear_error(tmp_path):
    model = _write(tmp_path, "p.toml", 'extends = "h100"\nname = "p"\n[[paths]]\n'
                   'name = "tcgen05"\nfraction_bits = 16\n')
    with pytest.raises(ConfigError) as err:
        tcsim.load_model(model)
    msg = str(err.value)
    assert "p.toml: paths.0 (name = 'tcgen05') matches no path of h100" in msg
    assert "wgmma e4m3/e5m2 -> fp32" in msg          # it lists what there is


def test_an_override_that_matches_two_paths_asks_for_formats(tmp_path):
    model = _write(tmp_path, "p.toml", 'extends = "h100"\nname = "p"\n[[paths]]\n'
                   'name = "wgmma"\nfraction_bits = 16\n')
    with pytest.raises(ConfigError, match=r"paths.0 \(name = 'wgmma'\) matches 2 paths of h100 "
                                          r".*add inputs or output"):
        tcsim.load_model(model)


def test_an_override_with_malformed_inputs_is_a_clear_error(tmp_path):
    model = _write(tmp_path, "p.toml", 'extends = "h100"\nname = "p"\n[[paths]]\n'
                   'name = "wgmma"\ninputs = [{x = 1}]\nfraction_bits = 16\n')
    with pytest.raises(ConfigError, match=r"paths\.0\.inputs: must be a list of format names"):
        tcsim.load_model(model)


def test_an_override_names_its_path(tmp_path):
    model = _write(tmp_path, "p.toml", 'extends = "h100"\nname = "p"\n[[paths]]\n'
                   'output = "fp32"\nfraction_bits = 16\n')
    with pytest.raises(ConfigError, match=r"paths.0: .*name"):
        tcsim.load_model(model)


def test_an_override_is_validated_with_the_file_named(tmp_path):
    model = _write(tmp_path, "p.toml", 'extends = "h100"\nname = "p"\n[[paths]]\n'
                   'name = "wgmma"\noutput = "fp32"\noutput_precision = 30\n')
    with pytest.raises(ConfigError, match=r"p\.toml: paths\.\d+.*output_precision"):
        tcsim.load_model(model)
    model = _write(tmp_path, "q.toml", 'extends = "h100"\nname = "q"\n[[paths]]\n'
                   'name = "wgmma"\noutput = "fp32"\nsurprise = 1\n')
    with pytest.raises(ConfigError, match=r"q\.toml: paths\.0 \(name = 'wgmma', output = "
                                          r"'fp32'\): surprise: Extra inputs"):
        tcsim.load_model(model)


def test_a_datapath_field_at_the_top_level_says_where_it_belongs(tmp_path):
    model = _write(tmp_path, "p.toml", 'extends = "h100"\nname = "p"\nfraction_bits = 16\n')
    with pytest.raises(ConfigError, match=r"p\.toml: fraction_bits: a datapath field belongs to a "
                                          r"path; write it in a \[\[paths\]\] entry naming"):
        tcsim.load_model(model)


def test_a_user_file_without_extends_needs_no_notes(tmp_path):
    model = tcsim.load_model(_write(tmp_path, "full.toml", """
name = "mine"
[[paths]]
inputs = ["e4m3"]
output = "fp32"
block_size = 32
fraction_bits = 16
"""))
    path = model.paths[0]
    assert path.status == "proposal"
    assert all(path.provenance[k].startswith("proposal")
               for k in ("block_size", "fraction_bits", "output_rounding"))


def test_a_user_file_without_paths_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"empty\.toml: paths: Field required"):
        tcsim.load_model(_write(tmp_path, "empty.toml", 'name = "nothing"\n'))


def _shipped(monkeypatch, tmp_path, files: dict) -> None:
    """Pretend ``files`` are the shipped presets (models/ is read through presets.preset_dir)."""
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text)
    monkeypatch.setattr(presets, "preset_dir", lambda: tmp_path)
    presets._load_preset.cache_clear()


def test_shipped_presets_still_require_notes(monkeypatch, tmp_path):
    h100 = (REPO / "models" / "h100.toml").read_text()
    _shipped(monkeypatch, tmp_path, {
        "h100": h100,
        "bare": 'name = "bare"\n[[paths]]\ninputs = ["e4m3"]\noutput = "fp32"\nblock_size = 32\n'
                'fraction_bits = 16\n',
        "child": 'extends = "h100"\nname = "child"\n[[paths]]\nname = "wgmma"\noutput = "fp32"\n'
                 'fraction_bits = 16\n',
        "noted": 'extends = "h100"\nname = "noted"\n[[paths]]\nname = "wgmma"\noutput = "fp32"\n'
                 'fraction_bits = 16\n[paths.provenance]\nfraction_bits = "MODEL: a source"\n'})
    try:
        with pytest.raises(ConfigError, match=r"models/bare\.toml: paths\.0.*provenance: no note"):
            tcsim.load_model("bare")
        with pytest.raises(ConfigError, match=r"models/child\.toml: paths\.0 .*no provenance note "
                                              r"for fraction_bits"):
            tcsim.load_model("child")
        noted = tcsim.load_model("noted").find_path("e4m3", "e4m3", "fp32")
        assert noted.fraction_bits == 16 and noted.provenance["fraction_bits"] == "MODEL: a source"
        assert noted.status == "explained"      # a shipped preset's status is what it says
    finally:
        presets._load_preset.cache_clear()


def test_shipped_extends_cycle_is_reported(monkeypatch, tmp_path):
    _shipped(monkeypatch, tmp_path, {"x": 'extends = "y"\nname = "x"\n',
                                     "y": 'extends = "X"\nname = "y"\n'})
    try:
        with pytest.raises(ConfigError, match="cycle"):
            tcsim.load_model("x")
    finally:
        presets._load_preset.cache_clear()


def test_every_shipped_preset_loads_and_children_keep_their_parents_paths():
    for name in presets.preset_names():
        tcsim.load_model(name)
    for child, parent in (("h200", "h100"), ("l40s", "ada"), ("a2", "a100"), ("a30", "a100")):
        assert tcsim.load_model(child).paths == tcsim.load_model(parent).paths


def test_cli_shows_a_proposal_and_refuses_a_path_in_extends(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "tcsim.cli", *args], capture_output=True,
                              text=True, timeout=600, cwd=REPO)

    out = run("models", "examples/h100_f16_proposal.toml")
    assert out.returncode == 0, out.stderr
    assert "f=16" in out.stdout and "[proposal]" in out.stdout
    assert "fraction_bits: proposal (h100_f16_proposal.toml" in out.stdout
    bad = _write(tmp_path, "escape.toml", 'extends = "../../../../etc/x"\nname = "p"\n')
    out = run("models", bad)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "escape.toml: extends:" in lines[0] and "Traceback" not in out.stderr


# ---- errors and labels name what the user's file wrote ----------------------------------------

@pytest.mark.parametrize("line, field", [("fraction_bit = 16", "fraction_bit"),
                                         ("fraction_bits = -3", "fraction_bits")])
def test_an_error_in_the_only_override_names_that_entry(tmp_path, line, field):
    """A typo in the file's only [[paths]] entry was reported as paths.3 (wgmma fp32's place
    in h100's list): the error names entry 0 of the file and the path it selects."""
    model = _write(tmp_path, "typo.toml", 'extends = "h100"\n[[paths]]\nname = "wgmma"\n'
                   f'output = "fp32"\n{line}\n')
    with pytest.raises(ConfigError) as info:
        tcsim.load_model(model)
    message = str(info.value)
    assert f"typo.toml: paths.0 (name = 'wgmma', output = 'fp32'): {field}:" in message
    assert "paths.3" not in message


def test_an_error_in_a_later_override_names_its_own_index(tmp_path):
    model = _write(tmp_path, "two.toml", 'extends = "h100"\n'
                   '[[paths]]\nname = "wgmma"\noutput = "fp32"\nfraction_bits = 16\n'
                   '[[paths]]\nname = "wmma"\ninputs = ["tf32"]\nblock_size = 0\n')
    with pytest.raises(ConfigError, match=r"two\.toml: paths\.1 \(name = 'wmma', inputs = "
                                          r"\['tf32'\]\): block_size:"):
        tcsim.load_model(model)


def test_a_proposal_without_name_or_description_is_labelled_by_its_file(tmp_path):
    """It used to carry h100's name and description ("NVIDIA H100 ..."), so a corpus table or
    `tcsim models` showed the proposal as the preset."""
    model = _write(tmp_path, "wide_aligner.toml", 'extends = "h100"\n[[paths]]\n'
                   'name = "wgmma"\noutput = "fp32"\nfraction_bits = 16\n')
    m = tcsim.load_model(model)
    assert m.name == "wide_aligner"
    assert m.description == "a proposal (wide_aligner.toml) based on h100"
    assert "NVIDIA" not in m.description
    named = _write(tmp_path, "n.toml", 'extends = "h100"\nname = "mine"\ndescription = "d"\n')
    assert (tcsim.load_model(named).name, tcsim.load_model(named).description) == ("mine", "d")
    # a shipped child keeps its own name and its parent's paths
    assert tcsim.load_model("h200").name == "h200"


# ---- provenance notes cite their evidence, never a ticket ---------------------------------------

TICKET = re.compile(r"\bissue\s*#?\d+|#\d+\b", re.IGNORECASE)


def test_the_tickets_pattern_finds_what_it_is_for():
    for cited in ("set in issue 14", "until Issue #14", "see #23", "(issue 16.7)"):
        assert TICKET.search(cited), cited
    for plain in ("the compiler issues two HMMA", "docs/hardware.md#fp16-output", "c785138"):
        assert not TICKET.search(plain), plain


@pytest.mark.parametrize("name", presets.preset_names())
def test_no_preset_note_names_an_issue_number(name, capsys):
    """What `tcsim models NAME` prints (every path's provenance notes) and the preset file itself
    cite a paper, a data set, a probe or a docs anchor, never an internal issue number."""
    from tcsim.cli import main
    text = presets.preset_dir().joinpath(f"{name}.toml").read_text()
    assert not TICKET.search(text), TICKET.search(text).group(0)
    notes = [note for p in tcsim.load_model(name).paths for note in p.provenance.values()]
    assert notes and not [n for n in notes if TICKET.search(n)]
    assert main(["models", name]) == 0
    shown = capsys.readouterr().out
    assert all(n in shown for n in notes)
    assert not TICKET.search(shown), TICKET.search(shown).group(0)


# ---- notes several paths share: top-level [[provenance]] entries ------------------------------

SHARED = '''
name = "shared"
[[provenance]]
when = { zero_sign = "plus" }
zero_sign = "shared: +0"
overflow = "shared: RZ keeps the largest finite value"

[[provenance]]
block_size = "shared: every path"

[[paths]]
inputs = ["fp16"]
output = "fp32"
block_size = 16
zero_sign = "plus"
[paths.provenance]
overflow = "own: this path's overflow"
fraction_bits = "own"

[[paths]]
inputs = ["bf16"]
output = "fp32"
block_size = 8
'''


def test_shared_notes_go_to_the_paths_that_write_their_values(tmp_path):
    plus, unwritten = tcsim.load_model(_write(tmp_path, "shared.toml", SHARED)).paths
    # the path's own note wins; the shared ones come first, then its own in the order written
    assert list(plus.provenance.items())[:4] == [
        ("zero_sign", "shared: +0"), ("block_size", "shared: every path"),
        ("overflow", "own: this path's overflow"), ("fraction_bits", "own")]
    # a path that does not write zero_sign = "plus" takes only the entry without `when`, even
    # where its zero_sign is "plus" by default: `when` reads what the file writes
    assert unwritten.zero_sign == "plus"
    assert unwritten.provenance["block_size"] == "shared: every path"
    assert "zero_sign" not in unwritten.provenance and "overflow" not in unwritten.provenance
    # a user's file: what no note covers still reads "proposal"
    assert unwritten.provenance["fraction_bits"].startswith("proposal")


def test_a_shipped_preset_may_give_its_required_notes_once(monkeypatch, tmp_path):
    notes = ('[[provenance]]\nblock_size = "MODEL: k4"\nfraction_bits = "MODEL: exact"\n'
             'output_rounding = "MODEL: RNE"\n')
    path = '[[paths]]\ninputs = ["{}"]\noutput = "fp32"\nblock_size = 4\noutput_rounding = "rne"\n'
    _shipped(monkeypatch, tmp_path, {"once": 'name = "once"\n' + notes + path.format("fp16")
                                     + path.format("bf16")})
    try:
        for p in tcsim.load_model("once").paths:
            assert p.provenance == {"block_size": "MODEL: k4", "fraction_bits": "MODEL: exact",
                                    "output_rounding": "MODEL: RNE"}
    finally:
        presets._load_preset.cache_clear()


def test_shared_notes_apply_to_the_override_entries_of_a_proposal(tmp_path):
    model = tcsim.load_model(_write(tmp_path, "p.toml", '''
extends = "h100"
[[provenance]]
when = { fraction_bits = 16 }
fraction_bits = "what-if: a wider aligner"
[[paths]]
name = "wgmma"
output = "fp32"
fraction_bits = 16
'''))
    path = model.find_path("e4m3", "e4m3", "fp32")
    assert path.fraction_bits == 16
    assert path.provenance["fraction_bits"] == "what-if: a wider aligner"
    assert path.provenance["block_size"] == tcsim.load_model("h100").find_path(
        "e4m3", "e4m3", "fp32").provenance["block_size"]


@pytest.mark.parametrize("entry, message", [
    ('when = { zero_sgn = "plus" }\nzero_sign = "n"', r"provenance\.0\.when: 'zero_sgn' is not a "
                                                      r"path field"),
    ('when = { zero_sign = "unsigned" }\nzero_sign = "n"', r"provenance\.0: when = .* matches no "
                                                           r"\[\[paths\]\] entry"),
    ('when = { zero_sign = "plus" }', r"provenance\.0: gives no notes"),
    ('zero_sign = 3', r"provenance\.0\.zero_sign: a note must be a string"),
    ('when = "plus"\nzero_sign = "n"', r"provenance\.0\.when: must be a table"),
    ('zero_sign = "a"\n[[provenance]]\nzero_sign = "b"', r"provenance\.1: paths\.0 .* already "
                                                         r"takes a note for zero_sign from "
                                                         r"provenance\.0"),
])
def test_a_malformed_shared_note_is_a_clear_error(tmp_path, entry, message):
    text = (f'name = "bad"\n[[provenance]]\n{entry}\n[[paths]]\ninputs = ["fp16"]\n'
            f'output = "fp32"\nzero_sign = "plus"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: " + message):
        tcsim.load_model(_write(tmp_path, "bad.toml", text))


def test_a_shared_provenance_table_must_be_an_array_of_tables(tmp_path):
    text = ('name = "bad"\n[provenance]\nzero_sign = "n"\n[[paths]]\ninputs = ["fp16"]\n'
            'output = "fp32"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: provenance: must be a list of tables"):
        tcsim.load_model(_write(tmp_path, "bad.toml", text))


def test_h100_paths_take_the_overflow_note_of_their_rounding():
    """h100 writes its overflow notes once per output rounding: an RZ path's says RZ keeps the
    largest finite value, an RNE path's that RNE overflows to Inf."""
    h100 = tcsim.load_model("h100")
    rz = h100.find_path("fp16", "fp16", "fp32").provenance["overflow"]
    rne = h100.find_path("fp16", "fp16", "fp16").provenance["overflow"]
    assert "IEEE RZ (largest finite value)" in rz and rne.startswith("ieee: RNE overflows to Inf")
    assert "probe h100-overflow-rz" in rz
