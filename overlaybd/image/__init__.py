"""Images: configs and opening the layer stack."""

from .config import ImageConfig, load_image_config, parse_cfgstring
from .image import Image, ImageOpener, ImageOpenError, open_image, write_result_file
from .settings import ServiceConfig, load_service_config

__all__ = ["ImageConfig", "load_image_config", "parse_cfgstring", "Image", "ImageOpener",
           "ImageOpenError", "open_image", "write_result_file", "ServiceConfig",
           "load_service_config"]
