"""samunet: a self-configuring pipeline that adapts the Segment Anything Model to medical image segmentation."""

__version__ = "0.1.0"
