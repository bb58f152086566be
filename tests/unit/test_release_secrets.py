"""Reading a release's secret values from Prefect Secret blocks: what a missing or unusable block says."""

from collections.abc import Callable

import pytest

from shipline.errors import DeployError
from shipline.release.secrets import read_secrets

VALUE = "correct horse battery staple"


def store(blocks: dict[str, object]) -> Callable[[str], object]:
    """A Secret block store of ``blocks`` that fails for a missing one as Prefect's ``Block.load`` does."""

    def value(name: str) -> object:
        if name not in blocks:
            raise ValueError(f"Unable to find block document named {name} for block type secret")
        return blocks[name]

    return value


def test_each_variable_gets_its_block_s_value() -> None:
    values = read_secrets(
        {"DB_PASSWORD": "shop-db", "API_KEY": "shop-api"},
        where="shop/prod",
        store=store({"shop-db": VALUE, "shop-api": "k-1", "other": "x"}),
    )
    assert values == {"DB_PASSWORD": VALUE, "API_KEY": "k-1"}


def test_a_missing_block_names_the_variable_the_block_and_how_to_create_it() -> None:
    with pytest.raises(DeployError) as caught:
        read_secrets({"DB_PASSWORD": "shop-db"}, where="shop/prod", store=store({}))
    error = caught.value
    assert error.message == (
        "shop/prod: DB_PASSWORD takes its value from the Prefect Secret block 'shop-db', "
        "and there is no such block"
    )
    assert error.hint is not None
    assert (
        "prefect block create secret" in error.hint and "Prefect UI" in error.hint and "shop-db" in error.hint
    )
    assert not error.transient  # retrying will not create it
    assert error.__cause__ is None and error.__suppress_context__


@pytest.mark.parametrize("stored", [{"password": VALUE}, [VALUE], f"{VALUE}\x00"])
def test_a_block_that_holds_no_text_is_refused_without_its_value(stored: object) -> None:
    with pytest.raises(DeployError) as caught:
        read_secrets({"DB_PASSWORD": "shop-db"}, where="shop/prod", store=store({"shop-db": stored}))
    assert "the Secret block 'shop-db' of DB_PASSWORD does not hold text" in caught.value.message
    assert VALUE not in f"{caught.value.message} {caught.value.hint}"
