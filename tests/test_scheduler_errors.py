"""Every bad input raises a ValueError that names the parameter and what was expected."""

import pytest
import torch

from ddpm_hf import PaperDDPMScheduler


def raises(match):
    return pytest.raises(ValueError, match=match)


def test_unknown_beta_schedule():
    with raises(r"`beta_schedule` must be one of \['linear', 'scaled_linear', 'squaredcos_cap_v2', 'sigmoid'\]"):
        PaperDDPMScheduler(beta_schedule="quadratic")


def test_unknown_variance_type():
    with raises(r"`variance_type` must be one of \['fixed_small', .*'learned_range'\], got 'learned'"):
        PaperDDPMScheduler(variance_type="learned")


def test_unknown_prediction_type():
    with raises(r"`prediction_type` must be one of \['epsilon', 'sample', 'v_prediction'\], got 'x0'"):
        PaperDDPMScheduler(prediction_type="x0")


def test_unknown_timestep_spacing():
    with raises(r"`timestep_spacing` must be one of \['leading', 'linspace', 'trailing'\]"):
        PaperDDPMScheduler(timestep_spacing="uniform")


def test_beta_start_outside_unit_interval():
    with raises(r"`beta_start` must lie in the open interval \(0, 1\); got 0.0"):
        PaperDDPMScheduler(beta_start=0.0)


def test_beta_end_outside_unit_interval():
    with raises(r"`beta_end` must lie in the open interval \(0, 1\); got 1.0"):
        PaperDDPMScheduler(beta_end=1.0)


def test_trained_betas_outside_unit_interval():
    with raises(r"`trained_betas` must lie in the open interval \(0, 1\); got 1.5"):
        PaperDDPMScheduler(num_train_timesteps=3, trained_betas=[0.1, 0.2, 1.5])


def test_trained_betas_of_wrong_length():
    with raises(r"`trained_betas` has 2 values but `num_train_timesteps` is 3"):
        PaperDDPMScheduler(num_train_timesteps=3, trained_betas=[0.1, 0.2])


def test_beta_start_above_beta_end():
    with raises(r"`beta_start` \(0.03\) must not exceed `beta_end` \(0.02\)"):
        PaperDDPMScheduler(beta_start=0.03)


@pytest.mark.parametrize("T", [0, -5, 2.5])
def test_num_train_timesteps_below_one(T):
    with raises(r"`num_train_timesteps` must be an integer >= 1"):
        PaperDDPMScheduler(num_train_timesteps=T)


def test_zero_terminal_snr_with_epsilon_prediction():
    with raises(r"`rescale_betas_zero_snr=True` .* use `prediction_type` 'v_prediction' or 'sample'"):
        PaperDDPMScheduler(rescale_betas_zero_snr=True)


@pytest.mark.parametrize("steps", [0, 1001])
def test_num_inference_steps_out_of_range(steps):
    with raises(r"`num_inference_steps` must be an integer in 1..1000"):
        PaperDDPMScheduler().set_timesteps(steps)


def test_custom_timesteps_not_descending():
    with raises(r"`timesteps` must be a non-empty, strictly descending list; got \[10, 20\]"):
        PaperDDPMScheduler().set_timesteps(timesteps=[10, 20])


def test_custom_timesteps_repeated():
    with raises(r"strictly descending"):
        PaperDDPMScheduler().set_timesteps(timesteps=[20, 20, 0])


@pytest.mark.parametrize("timesteps", [[1000, 0], [5, -1]])
def test_custom_timesteps_out_of_range(timesteps):
    with raises(r"`timesteps` must lie in 0..999"):
        PaperDDPMScheduler().set_timesteps(timesteps=timesteps)


def test_both_step_count_and_timesteps():
    with raises(r"Pass exactly one of `num_inference_steps` and `timesteps`"):
        PaperDDPMScheduler().set_timesteps(10, timesteps=[5, 0])


def test_timestep_not_in_schedule():
    scheduler = PaperDDPMScheduler()
    scheduler.set_timesteps(10)
    x = torch.zeros(1, 3, 4, 4)
    with raises(r"`timestep` 500 is not in the current schedule \[999, 899, 799, 699, 599, '...'\]"):
        scheduler.step(x, 500, x)


def test_model_output_of_wrong_shape():
    x = torch.zeros(2, 3, 4, 4)
    with raises(r"`model_output` has shape \(2, 6, 4, 4\); expected \(2, 3, 4, 4\)"):
        PaperDDPMScheduler().step(torch.zeros(2, 6, 4, 4), 999, x)


def test_learned_range_needs_twice_the_channels():
    x = torch.zeros(2, 3, 4, 4)
    with raises(r"expected \(2, 6, 4, 4\) .* variance_type 'learned_range'"):
        PaperDDPMScheduler(variance_type="learned_range").step(torch.zeros(2, 3, 4, 4), 999, x)


def test_generator_list_of_wrong_length():
    x = torch.zeros(2, 3, 4, 4)
    with raises(r"`generator` is a list of 3 generators; expected one per sample \(2\)"):
        PaperDDPMScheduler().step(x, 999, x, generator=[torch.Generator() for _ in range(3)])


@pytest.mark.parametrize("t", [-1, 1000, 2.5])
def test_add_noise_timestep_out_of_range(t):
    x = torch.zeros(1, 3, 4, 4)
    with raises(r"`timesteps` must be integers in 0..999"):
        PaperDDPMScheduler().add_noise(x, x, t)


def test_add_noise_tensor_timesteps_out_of_range():
    x = torch.zeros(2, 3, 4, 4)
    with raises(r"`timesteps` must lie in 0..999; got values from -1 to 5"):
        PaperDDPMScheduler().add_noise(x, x, torch.tensor([5, -1]))


def test_add_noise_float_timesteps():
    x = torch.zeros(2, 3, 4, 4)
    with raises(r"`timesteps` must be an integer tensor; got dtype torch.float32"):
        PaperDDPMScheduler().add_noise(x, x, torch.tensor([5.0, 1.0]))


def test_custom_timesteps_not_integers():
    with raises(r"`timesteps` must be integers; got \[500.7, 3.2\]"):
        PaperDDPMScheduler().set_timesteps(timesteps=[500.7, 3.2])
