"""Package discovery plus the preset mapping (metadata lives in pyproject.toml).

conf/ and sweeps/ stay at the top of the repository (the project layout fixes them there); a wheel
carries them as bitcpm.presets.conf / bitcpm.presets.sweeps so a cluster install has every preset.
"""

from setuptools import find_namespace_packages, find_packages, setup

PRESETS = {"bitcpm.presets.conf": "conf", "bitcpm.presets.sweeps": "sweeps"}

setup(
    # hydra_plugins is a namespace package shared with other Hydra plugins: Hydra finds the Launcher there.
    packages=find_packages(include=["bitcpm", "bitcpm.*", "launchers", "launchers.*"])
    + find_namespace_packages(include=["hydra_plugins.*"])
    + list(PRESETS),
    package_dir=PRESETS,
)
