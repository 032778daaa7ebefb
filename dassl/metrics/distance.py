"""Pairwise distances between two sets of feature vectors."""
import torch.nn.functional as F

__all__ = ["compute_distance_matrix", "euclidean_squared_distance", "cosine_distance"]


def compute_distance_matrix(input1, input2, metric="euclidean"):
    """Distances [M, N] between the rows of ``input1`` [M, D] and ``input2`` [N, D].

    ``metric``: "euclidean" (squared Euclidean) or "cosine" (1 - cosine similarity).
    """
    if input1.dim() != 2 or input2.dim() != 2:
        raise ValueError(f"Expected 2-D inputs, got {input1.dim()}-D and {input2.dim()}-D")
    if input1.size(1) != input2.size(1):
        raise ValueError(f"Feature sizes differ: {input1.size(1)} vs {input2.size(1)}")
    if metric == "euclidean":
        return euclidean_squared_distance(input1, input2)
    if metric == "cosine":
        return cosine_distance(input1, input2)
    raise ValueError(f"Unknown distance metric: {metric}. Please choose either 'euclidean' or 'cosine'")


def euclidean_squared_distance(input1, input2):
    """||a||^2 + ||b||^2 - 2 a.b for every pair of rows, shape [M, N]."""
    sq1 = input1.pow(2).sum(dim=1, keepdim=True)  # [M, 1]
    sq2 = input2.pow(2).sum(dim=1, keepdim=True).t()  # [1, N]
    return (sq1 + sq2).addmm(input1, input2.t(), beta=1, alpha=-2)


def cosine_distance(input1, input2):
    """1 - cos(a, b) for every pair of rows, shape [M, N]."""
    return 1 - F.normalize(input1, p=2, dim=1) @ F.normalize(input2, p=2, dim=1).t()
