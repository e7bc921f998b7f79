"""Deliberately wrong uses of loopkit. typecheck/run.py requires mypy to report exactly the errors that the
``# error:`` comments name, on their lines, so a lost annotation (an Any where a type was) fails the check."""

import torch

from loopkit import Learner, Scheduler, onecycle

model = torch.nn.Linear(2, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
learner = Learner(model, [], optimizer, torch.nn.functional.mse_loss)
learner.fit("3")  # error: Argument 1 to "fit" of "Learner" has incompatible type "str"; expected "int | None"
onecycle(10, "0.1")  # error: Argument 2 to "onecycle" has incompatible type "str"; expected "float"
Scheduler({}, per=1)  # error: Argument "per" to "Scheduler" has incompatible type "int"; expected "str"
learner.global_step + "1"  # error: Unsupported operand types for + ("int" and "str")
