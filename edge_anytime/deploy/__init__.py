"""Deploy: target profiles, self-contained packages, and install/profile/self-test on a device.

The command line is `python -m edge_anytime.deploy` (see `__main__.py` and docs/deploy.md).
This subpackage runs on the workstation; on the device only `edge_anytime.serve`,
`edge_anytime.selftest` and `edge_anytime.profiling` run (numpy + one interpreter).

>>> from edge_anytime.deploy import load_target
>>> load_target("jetson").name, load_target("jetson").alias
('jetson-orin-nano', 'jetson')
"""

from .package import DeployError, Staging, build_wheel, choose_precisions, write_package
from .remote import Remote
from .targets import Target, TargetError, known_targets, load_all, load_target

__all__ = ["DeployError", "Remote", "Staging", "Target", "TargetError", "build_wheel", "choose_precisions",
           "known_targets", "load_all", "load_target", "write_package"]
