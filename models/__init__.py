"""DAT (Vision Transformer with Deformable Attention) in pure PyTorch.

from models import create_model, load_checkpoint
model = create_model("dat_tiny")
load_checkpoint(model, "dat_tiny_in1k_224.pth")
logits = model.eval()(images)
"""

from .backbone import DATBackbone
from .checkpoint import CheckpointError, load_checkpoint, read_state_dict, save_safetensors
from .config import DATConfig
from .dat import DAT, ModelInfo
from .detection import Detections, RetinaNet, load_backbone
from .factory import create_backbone, create_detector, create_model
from .instances import ImageInstances, InstanceDetections, paste_masks
from .labels import imagenet_labels
from .mmdet_retinanet import MMDetRetinaNet
from .rcnn import RCNN
from .rcnn_config import RCNNConfig
from .registry import ModelSpec, get_spec, list_models, register_model
from .retinanet_config import MMDetRetinaNetConfig, RetinaNetConfig
from .segmenter import RetinaNetSegmenter, SegmenterConfig
from .tasks import CLASSIFICATION, DETECTION, INSTANCE_SEGMENTATION, TASKS, Task, task_named
from .transform_protocol import Transform
from .transforms import KeepRatioResize, Letterbox, Preprocessing, preprocessing_from_dict

__all__ = [
    "CLASSIFICATION",
    "DETECTION",
    "INSTANCE_SEGMENTATION",
    "TASKS",
    "Task",
    "task_named",
    "DAT",
    "DATBackbone",
    "DATConfig",
    "CheckpointError",
    "Detections",
    "ImageInstances",
    "InstanceDetections",
    "KeepRatioResize",
    "Letterbox",
    "MMDetRetinaNet",
    "MMDetRetinaNetConfig",
    "ModelInfo",
    "ModelSpec",
    "Preprocessing",
    "RCNN",
    "RCNNConfig",
    "RetinaNet",
    "RetinaNetConfig",
    "RetinaNetSegmenter",
    "SegmenterConfig",
    "Transform",
    "create_backbone",
    "create_detector",
    "create_model",
    "get_spec",
    "imagenet_labels",
    "list_models",
    "load_backbone",
    "load_checkpoint",
    "paste_masks",
    "preprocessing_from_dict",
    "read_state_dict",
    "register_model",
    "save_safetensors",
]
