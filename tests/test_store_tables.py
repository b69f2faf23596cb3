"""The ORM classes map the store's Core tables, column for column (noti.store.tables is the one definition)."""

from __future__ import annotations

import typing

import pytest
from sqlalchemy import inspect

from noti.store import models, tables
from noti.store.models import Base


def _mapped_classes() -> list[type[Base]]:
    return [mapper.class_ for mapper in Base.registry.mappers]


def test_every_table_has_its_orm_class() -> None:
    assert {cls.__table__.name for cls in _mapped_classes()} == set(tables.metadata.tables)
    assert Base.metadata is tables.metadata


@pytest.mark.parametrize("cls", _mapped_classes(), ids=lambda cls: cls.__name__)
def test_orm_class_annotates_exactly_its_tables_columns(cls: type[Base]) -> None:
    # The annotations are the columns' Python types for mypy; a column added to the table without one
    # (or an annotation left after a column is dropped) would drift silently.
    hints = typing.get_type_hints(cls, vars(models))
    columns = {name for name, hint in hints.items() if typing.get_origin(hint) is models.Mapped} - set(
        inspect(cls).relationships.keys()
    )
    assert columns == set(cls.__table__.c.keys())


@pytest.mark.parametrize("cls", _mapped_classes(), ids=lambda cls: cls.__name__)
def test_optional_annotations_match_nullable_columns(cls: type[Base]) -> None:
    hints = typing.get_type_hints(cls, vars(models))
    for column in cls.__table__.c:
        (python_type,) = typing.get_args(hints[column.name])
        optional = type(None) in typing.get_args(python_type)
        assert optional == (column.nullable and not column.primary_key), f"{cls.__name__}.{column.name}"
