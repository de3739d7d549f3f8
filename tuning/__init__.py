"""Ray Tune over ecomtrain: the joint search space, the Tuner, and the sweep report."""
