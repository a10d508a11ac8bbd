"""What nanogpt.cli.hydra_compat relies on in Hydra, provoked for real: its argument parser and the
wording of the errors that the one-line refusals read. A Hydra upgrade that changes any of it
fails here, naming what changed, instead of turning refusals into tracebacks."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf.errors import ValidationError

from nanogpt.cli.hydra_compat import LEXER_PREFIX, PARSE_ERROR_PREFIX, merged_override, parse_hydra_arguments, unknown_key
from nanogpt.config import CONF_DIR
from nanogpt.errors import first_line


class Refused(Exception):
    pass


def refuse(message: str):
    raise Refused(message)


def compose_error(*overrides: str) -> ConfigCompositionException:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"), pytest.raises(ConfigCompositionException) as err:
        compose("config", overrides=list(overrides))
    return err.value


def test_hydras_parser_reads_its_flags_and_leaves_the_overrides():
    args = parse_hydra_arguments(["-m", "--cfg", "job", "model=small", "max_iters=5"], refuse)
    assert args.multirun and args.cfg == "job" and args.overrides == ["model=small", "max_iters=5"]
    args = parse_hydra_arguments(["-sc", "install=bash"], refuse)
    assert args.shell_completion and args.overrides == ["install=bash"]
    assert parse_hydra_arguments(["--info"], refuse).info
    assert not parse_hydra_arguments([], refuse).experimental_rerun


def test_hydras_parser_refuses_an_unknown_flag_through_our_refusal():
    with pytest.raises(Refused, match="unrecognized arguments: --bogus"):
        parse_hydra_arguments(["--bogus"], refuse)


def test_an_unknown_key_is_reported_as_could_not_override():
    exc = compose_error("max_iter=5")
    assert unknown_key(first_line(exc)) == "max_iter", first_line(exc)


def test_a_wrong_type_is_reported_as_error_merging_override_with_the_validation_error_as_cause():
    exc = compose_error("model.n_layer=abc")
    assert merged_override(first_line(exc)) == "model.n_layer=abc", first_line(exc)
    assert isinstance(exc.__cause__, ValidationError) and str(exc.__cause__.full_key) == "model.n_layer"


def test_a_value_outside_a_choice_is_reported_as_error_merging_override():
    exc = compose_error("model.norm=foo")
    assert merged_override(first_line(exc)) == "model.norm=foo"
    assert isinstance(exc.__cause__, ValidationError)


def test_a_character_the_grammar_has_no_place_for_is_a_lexer_error_with_a_caret():
    with pytest.raises(OverrideParseException) as err:
        OverridesParser.create().parse_overrides(["prompt=a'b"])
    lines = [line for line in err.value.message.splitlines() if line.strip()]
    assert lines[0].startswith(LEXER_PREFIX), lines
    assert lines[1].rstrip().endswith("^"), lines  # the caret under the character: nanogpt.cli.refusals reads its column


def test_other_syntax_errors_start_with_error_parsing_override():
    with pytest.raises(OverrideParseException) as err:
        OverridesParser.create().parse_overrides(["optimizer.learning_rate=("])
    assert err.value.message.startswith(PARSE_ERROR_PREFIX), err.value.message
