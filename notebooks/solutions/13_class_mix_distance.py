# Solution of exercise 13: the class-mix distance of digits_classifier over the last 5 minutes.
# Share of each class: the classes' prediction rates, each summed over the instances, over their sum
# (ignoring (class) group_left: one total per model for the ten classes). Training shares: the gauge,
# the same on every instance, so take one per class with avg by (model, class). Total variation
# distance: half the sum of the absolute differences, one number per model.
rates = "rate(digits_predictions_total[5m])"
class_share = f"(sum by (model, class) ({rates}) / ignoring (class) group_left sum by (model) ({rates}))"
training_share = "avg by (model, class) (digits_training_class_share)"
class_mix_distance_promql = f"0.5 * sum by (model) (abs({class_share} - on (model, class) {training_share}))"
