"""What ``export`` writes beside the model: the check against PyTorch, the model card, the WSInfer folder."""
