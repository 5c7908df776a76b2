"""Call a KFP component's Python function with fake artifacts, as Kubeflow's pipelines-components test theirs.

Each artifact is a real `kfp.dsl` artifact object whose `.path` is a folder under the test's tmp_path; the step
function the component forwards to (`fracture.kubeflow.steps.<name>`) is replaced by a recorder, so a test pins
which artifact path reaches which argument, the one place where a component can go wrong.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfp.dsl.types import type_annotations

from fracture.kubeflow import steps


@dataclass
class Call:
    """What the component passed to its step function, and the fake artifacts it was given."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    returned: Any = None

    def path(self, name: str) -> str:
        """The path of the fake artifact `name`."""
        return self.artifacts[name].path


def call_component(
    component: Any, step: str, tmp_path: Path, monkeypatch: Any, returns: Any = None, **params: Any
) -> Call:
    """Run `component`'s function with fake artifacts and `params`; record its call to `steps.<step>`."""
    call = Call()

    def record(*args: Any, **kwargs: Any) -> Any:
        call.args, call.kwargs = args, kwargs
        return returns

    monkeypatch.setattr(steps, step, record)
    values: dict[str, Any] = {}
    for name, parameter in inspect.signature(component.python_func).parameters.items():
        annotation = parameter.annotation
        if type_annotations.is_Input_Output_artifact_annotation(annotation):
            cls = type_annotations.get_io_artifact_class(annotation)
            values[name] = call.artifacts[name] = cls(name=name, uri=str(tmp_path / name), metadata={})
        else:
            values[name] = params[name]
    call.returned = component.python_func(**values)
    return call
