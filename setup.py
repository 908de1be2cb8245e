from setuptools import Extension, find_packages, setup

# Optional C accelerator of the ZFile reader (batched CRC + LZ4 into the caller's buffer).  It
# needs only gcc and the Python headers; if it does not build, the pure-Python path is used.
ZFAST = Extension("overlaybd.zfile._zfast", ["overlaybd/zfile/_zfast.c"],
                  extra_compile_args=["-O2"], libraries=["dl"], optional=True)

TOOLS = {
    "overlaybd-tcmu": "overlaybd.tools.tcmu:main",
    "overlaybd-create": "overlaybd.tools.create:main",
    "overlaybd-commit": "overlaybd.tools.commit:main",
    "overlaybd-zfile": "overlaybd.tools.zfile:main",
    "overlaybd-merge": "overlaybd.tools.merge:main",
    "overlaybd-export": "overlaybd.tools.export:main",
    "overlaybd-info": "overlaybd.tools.info:main",
    "overlaybd-logstat": "overlaybd.tools.logstat:main",
}

setup(
    name="overlaybd",
    version="0.1.0",
    description="overlaybd (DADI) block-level lazily fetched container images, in Python",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["overlaybd", "overlaybd.*"]),
    install_requires=[
        "numpy>=1.24",
        "lz4>=4.0",
        "zstandard>=0.21",
        "crc32c>=2.3",
        "mmh3>=4.0",
        "posix_ipc>=1.1",
        "multiprocess>=0.70",
        "psutil>=5.9",
        "prometheus_client>=0.16",
        "loguru>=0.7",
        "urllib3>=2.0",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "ruff", "build", "matplotlib"],
    },
    ext_modules=[ZFAST],
    entry_points={"console_scripts": [f"{k}={v}" for k, v in TOOLS.items()]},
    data_files=[("share/overlaybd/conf", ["conf/overlaybd.json", "conf/overlaybd-tcmu.service"])],
)
