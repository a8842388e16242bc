"""A key typed as text parts becomes the text lineage stores for it."""

from pathlib import Path

import pytest

from capstone.config import load_config, starter_config
from capstone.errors import ConfigError
from capstone.spec import EVENTS, PipelineSpec
from capstone.spec import lineage_key_from_parts as from_parts


@pytest.fixture
def orders(tmp_path: Path) -> PipelineSpec:
    """The starter config's `orders` pipeline: its key is order_id (string), line (integer)."""
    path = tmp_path / "capstone.toml"
    path.write_text(starter_config(), encoding="utf-8")
    return load_config(path).pipeline("orders")


class TestFromParts:
    def test_a_single_part_is_the_key_itself(self) -> None:
        """One part, with or without a pipeline, is the lineage key as typed."""
        assert from_parts(["evt-003"]) == from_parts(["evt-003"], EVENTS) == "evt-003"

    def test_a_composite_key_is_typed_and_joined_as_the_pipeline_writes_it(
        self, orders: PipelineSpec
    ) -> None:
        """Integer parts become numbers in the JSON array the pipeline stores."""
        assert from_parts(["O-1", "2"], orders) == '["O-1",2]'

    def test_several_parts_need_a_pipeline(self) -> None:
        """Without a pipeline, several parts are refused naming --pipeline."""
        with pytest.raises(ConfigError, match="needs --pipeline"):
            from_parts(["O-1", "2"])

    def test_the_number_of_parts_must_match_the_key(self, orders: PipelineSpec) -> None:
        """A part too few is refused, naming the key fields."""
        with pytest.raises(ConfigError, match=r"2 part\(s\) \(order_id, line\); give 2 value"):
            from_parts(["O-1"], orders)

    def test_an_integer_part_must_be_an_integer(self, orders: PipelineSpec) -> None:
        """Text where the key field is an integer is refused, naming the field."""
        with pytest.raises(ConfigError, match="key field 'line' is an integer, not 'x'"):
            from_parts(["O-1", "x"], orders)
