"""Solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam), lr policies and the step loop."""
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                     RMSPropSolver, SGDSolver, Solver, TrainingDiverged, get_solver)
