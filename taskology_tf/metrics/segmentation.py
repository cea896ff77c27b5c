"""Semantic segmentation metrics (numpy): confusion matrix, per-class IoU, mIoU, pixel accuracy.

The confusion matrix ``cm`` is [C, C] int64 with rows = ground-truth class and
columns = predicted class, summed over every labelled pixel. For class c:

    IoU_c = cm[c, c] / (sum_j cm[c, j] + sum_i cm[i, c] - cm[c, c])   (TP / (TP + FN + FP))

A class absent from both the ground truth and the prediction has an empty
union; its IoU is NaN and it is left out of every mean (so a class that never
occurs in the evaluation set neither helps nor hurts mIoU). A class that occurs
only in the prediction has IoU 0 and counts. Pixels labelled ``ignore_label``
(``IGNORE_LABEL`` = 255 in the example contract) are skipped; any other label
outside [0, C) is an error.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from taskology_tf.data.example import CLASS_NAMES, IGNORE_LABEL, MOVABLE_CLASSES


def _as_bhw_labels(name: str, x) -> np.ndarray:
    """Integer label map [B, H, W, 1] or [B, H, W] -> int64 [B, H, W]."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 3:
        raise ValueError(f"`{name}` must be a label map [B, H, W, 1] or [B, H, W], got shape {x.shape}.")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"`{name}` must hold integer class ids, got dtype {x.dtype}.")
    return x.astype(np.int64)


def labels_from_predictions(pred, num_classes: int) -> np.ndarray:
    """Predicted class ids int64 [B, H, W]: integer input is taken as labels, floating input as logits.

    pred: int labels [B, H, W(, 1)], or float logits/probabilities [B, H, W, num_classes] (argmax).
    """
    pred = np.asarray(pred)
    if np.issubdtype(pred.dtype, np.floating):
        if pred.ndim != 4 or pred.shape[-1] != num_classes:
            raise ValueError(
                f"Floating-point predictions are taken as logits [B, H, W, {num_classes}], got shape {pred.shape}. "
                "Pass integer class ids [B, H, W] for label maps."
            )
        return np.argmax(pred, axis=-1).astype(np.int64)
    return _as_bhw_labels("pred", pred)


def confusion_matrix(pred, gt, num_classes: int, ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """[C, C] int64 counts of (gt class, predicted class) over the pixels whose gt is not ``ignore_label``.

    pred, gt: integer class ids [B, H, W] or [B, H, W, 1] (same shape).
    """
    pred = _as_bhw_labels("pred", pred)
    gt = _as_bhw_labels("gt", gt)
    if pred.shape != gt.shape:
        raise ValueError(f"`pred` and `gt` must have the same shape, got {pred.shape} and {gt.shape}.")
    keep = gt != ignore_label
    gt, pred = gt[keep], pred[keep]
    for name, x in (("gt", gt), ("pred", pred)):
        bad = (x < 0) | (x >= num_classes)
        if np.any(bad):
            raise ValueError(
                f"`{name}` has class ids {sorted(set(x[bad].tolist()))[:5]} outside [0, {num_classes}) "
                f"(ignore label {ignore_label}). Check num_classes and the label mapping of the dataset."
            )
    return np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """float64 [C]: TP / (TP + FP + FN) per class; NaN where the class is in neither gt nor prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(cm: np.ndarray, class_ids: Sequence[int] | None = None) -> float:
    """Mean IoU over ``class_ids`` (default all) that occur in gt or prediction; NaN if none does."""
    iou = iou_per_class(cm)
    if class_ids is not None:
        iou = iou[list(class_ids)]
    iou = iou[~np.isnan(iou)]
    return float(np.mean(iou)) if iou.size else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of labelled pixels predicted correctly; NaN when there are none."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


class SegmentationMetrics:
    """Confusion-matrix accumulator over batches.

    ``result()`` -> ``miou`` (all classes present), ``miou_movable`` (movable classes present),
    ``pixel_accuracy`` and ``iou_<class name>`` per class (NaN for absent classes).

    Args:
      num_classes: number of classes (default: ``len(class_names)``).
      class_names: names of classes 0..C-1 (default: ``CLASS_NAMES`` of the example contract when
        ``num_classes`` is None or matches it, else "class_<i>").
      movable_classes: names of the movable classes (default: those of ``MOVABLE_CLASSES`` among
        ``class_names``).
      ignore_label: gt value of unlabelled pixels.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        movable_classes: Sequence[str] | None = None,
        ignore_label: int = IGNORE_LABEL,
    ):
        if class_names is None:
            if num_classes is None or num_classes == len(CLASS_NAMES):
                class_names = CLASS_NAMES
            else:
                class_names = tuple(f"class_{i}" for i in range(num_classes))
        class_names = tuple(class_names)
        if num_classes is None:
            num_classes = len(class_names)
        if num_classes < 1 or len(class_names) != num_classes:
            raise ValueError(f"Need num_classes >= 1 names, got num_classes={num_classes} and {len(class_names)} class_names.")
        if movable_classes is None:
            movable_classes = tuple(c for c in MOVABLE_CLASSES if c in class_names)
        unknown = [c for c in movable_classes if c not in class_names]
        if unknown:
            raise ValueError(f"movable_classes {unknown} are not among class_names {class_names}.")
        self.num_classes = num_classes
        self.class_names = class_names
        self.movable_classes = tuple(movable_classes)
        self.movable_ids = tuple(class_names.index(c) for c in self.movable_classes)
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        """Forget every pixel seen so far."""
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred, gt) -> None:
        """Add a batch: pred int labels [B, H, W(, 1)] or float logits [B, H, W, C]; gt int [B, H, W(, 1)]."""
        labels = labels_from_predictions(pred, self.num_classes)
        self.confusion += confusion_matrix(labels, gt, self.num_classes, self.ignore_label)

    @property
    def num_pixels(self) -> int:
        """Number of labelled pixels seen so far."""
        return int(self.confusion.sum())

    def result(self) -> dict[str, float]:
        iou = iou_per_class(self.confusion)
        out = {
            "miou": mean_iou(self.confusion),
            "miou_movable": mean_iou(self.confusion, self.movable_ids) if self.movable_ids else float("nan"),
            "pixel_accuracy": pixel_accuracy(self.confusion),
        }
        out.update({f"iou_{name}": float(v) for name, v in zip(self.class_names, iou)})
        return out
