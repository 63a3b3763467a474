// ScalingLaws
//
// The distillation scaling law of Busbridge et al. (2025): Eq. 1 and Eq. 8, FLOP accounting and fitting.
