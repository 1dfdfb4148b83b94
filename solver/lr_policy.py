"""Learning-rate policies (sgd_solver.cpp:GetLearningRate)."""
import math

from minicaffe.errors import CaffeError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param):
    if not param.lr_policy:
        raise CaffeError("Unknown learning rate policy: '' (lr_policy is required; one of %s)"
                         % ", ".join(POLICIES))
    if param.lr_policy not in POLICIES:
        raise CaffeError("Unknown learning rate policy: '%s' (known: %s)"
                         % (param.lr_policy, ", ".join(POLICIES)))
    if param.lr_policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise CaffeError("lr_policy '%s' needs stepsize > 0, got %d"
                         % (param.lr_policy, param.stepsize))
    if param.lr_policy in ("step", "exp", "inv", "multistep", "sigmoid") and param.gamma < 0:
        # sgd_solver.cpp:GetLearningRate CHECK_GE(gamma, 0) for each of these policies
        raise CaffeError("gamma must be >= 0 for lr_policy '%s', got %g"
                         % (param.lr_policy, param.gamma))


def learning_rate(param, it, current_step):
    """(rate, new current_step) at iteration ``it``. multistep advances at most one step per
    call, as Caffe does."""
    p = param.lr_policy
    base = param.base_lr
    if p == "fixed":
        return base, current_step
    if p == "step":
        step = it // param.stepsize
        return base * param.gamma ** step, step
    if p == "exp":
        return base * param.gamma ** it, current_step
    if p == "inv":
        return base * (1.0 + param.gamma * it) ** (-param.power), current_step
    if p == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        return base * param.gamma ** current_step, current_step
    if p == "poly":
        if param.max_iter <= 0:
            raise CaffeError("lr_policy 'poly' needs max_iter > 0")
        return base * (1.0 - float(it) / param.max_iter) ** param.power, current_step
    if p == "sigmoid":
        return base / (1.0 + math.exp(-param.gamma * (it - param.stepsize))), current_step
    check_policy(param)
