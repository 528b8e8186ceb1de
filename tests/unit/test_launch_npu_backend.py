"""The NPU worker backend with a mocked Ascend stack: torch_npu, then MindSpeed's adaptor, both before megatron.

torch_npu cannot be imported on this machine (no CANN: libhccl.so is missing), so fake modules stand in for
the stack and record the order in which they are imported and what was already loaded at that moment.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types

import pytest

from bitcpm.backends import npu

pytestmark = pytest.mark.quick

STACK = ("torch_npu", "mindspeed", "mindspeed.megatron_adaptor")


class FakeStack(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the Ascend modules; `broken` maps a module name to the exception its import raises."""

    def __init__(self, broken: dict[str, BaseException] | None = None) -> None:
        self.imported: list[tuple[str, bool]] = []  # (module, megatron already loaded?)
        self.broken = broken or {}

    def find_spec(self, name, path=None, target=None):
        if name in STACK:
            return importlib.machinery.ModuleSpec(name, self, is_package=name == "mindspeed")
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        if module.__name__ in self.broken:
            raise self.broken[module.__name__]
        megatron_loaded = any(m == "megatron" or m.startswith("megatron.") for m in sys.modules)
        self.imported.append((module.__name__, megatron_loaded))


@pytest.fixture
def stack(monkeypatch):
    """Install a fake stack on a sys.modules without megatron (restored afterwards)."""

    def install(**broken: BaseException) -> FakeStack:
        for name in [m for m in sys.modules if m.split(".")[0] in ("megatron", "torch_npu", "mindspeed")]:
            monkeypatch.delitem(sys.modules, name)
        fake = FakeStack({k.replace("__", "."): v for k, v in broken.items()})
        monkeypatch.setattr(sys, "meta_path", [fake, *sys.meta_path])
        return fake

    yield install
    for name in STACK:
        sys.modules.pop(name, None)


def test_torch_npu_then_adaptor_before_megatron(stack):
    fake = stack()
    npu.prepare()
    assert [name for name, _ in fake.imported] == ["torch_npu", "mindspeed", "mindspeed.megatron_adaptor"]
    assert not any(megatron for _, megatron in fake.imported)


def test_megatron_loaded_first_is_refused(stack, monkeypatch):
    fake = stack()
    monkeypatch.setitem(sys.modules, "megatron.core", types.ModuleType("megatron.core"))
    with pytest.raises(RuntimeError, match="megatron was imported before the NPU backend"):
        npu.prepare()
    assert fake.imported == []


def test_missing_cann_gives_one_clear_line(stack):
    stack(torch_npu=OSError("libhccl.so: cannot open shared object file: No such file or directory"))
    with pytest.raises(RuntimeError) as err:
        npu.prepare()
    message = str(err.value)
    assert "hardware.device=npu needs torch_npu" in message and "set_env.sh" in message and "libhccl.so" in message
    assert "\n" not in message


def test_missing_mindspeed_names_the_real_source(stack):
    fake = stack(mindspeed__megatron_adaptor=ModuleNotFoundError("No module named 'mindspeed.megatron_adaptor'"))
    with pytest.raises(RuntimeError, match="needs mindspeed.megatron_adaptor .*PyPI has a placeholder"):
        npu.prepare()
    assert [name for name, _ in fake.imported] == ["torch_npu", "mindspeed"]


def test_real_import_fails_cleanly_on_this_machine():
    # Without the fake stack: torch_npu is absent here, and the backend says what is missing.
    if importlib.util.find_spec("torch_npu") is not None:
        pytest.skip("torch_npu is installed")
    saved = {m: sys.modules.pop(m) for m in list(sys.modules) if m == "megatron" or m.startswith("megatron.")}
    try:
        with pytest.raises(RuntimeError, match="needs torch_npu"):
            npu.prepare()
    finally:
        sys.modules.update(saved)
