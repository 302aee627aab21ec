"""Target descriptions (specs/targets/*.toml): every hardware number lives there."""

from tcc_compiler.target.target import Target, load_target  # noqa: F401
