"""Knowledge distillation (Hinton et al. 2015) for retraining a compressed model.

The teacher is the uncompressed model. The loss is ``alpha * T^2 * KL(teacher_T || student_T) +
(1 - alpha) * CE(student, labels)``, where ``_T`` is a softmax at temperature T (the T^2 keeps the
soft term's gradients at the scale of the hard one). Without labels (``labels=None``, or alpha 1) it is
the soft term alone, so images without labels (or with labels of another class set) can be used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None = None, *,
                      temperature: float = 4.0, alpha: float = 0.9, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over the batch; logits [N, C] of student and teacher, labels [N] or None."""
    t = float(temperature)
    soft = F.kl_div(F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                    log_target=True, reduction="batchmean") * (t * t)
    if labels is None or alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student.float(), labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard
