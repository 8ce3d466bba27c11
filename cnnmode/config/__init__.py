"""The one config object: schema (defaults), parsing (YAML, key=value) and `resolve_config` (recipes)."""
from cnnmode.config.parse import (config_from_dict, dump_yaml, flatten, load_yaml_text, parse_override, read_yaml,
                                  set_key)
from cnnmode.config.resolve import (check_early, check_for_size, check_run_name, list_recipes, pick_base, recipe_tree,
                                    resolve_config, validate)
from cnnmode.config.schema import (AugConfig, Config, DataConfig, ModelConfig, OptimConfig, RunConfig, SchedConfig,
                                   TrainConfig, all_keys, opt)

__all__ = ["AugConfig", "Config", "DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "SchedConfig",
           "TrainConfig", "all_keys", "opt", "check_early", "check_for_size", "check_run_name", "config_from_dict", "dump_yaml", "flatten", "list_recipes", "load_yaml_text",
           "parse_override", "pick_base", "read_yaml", "recipe_tree", "resolve_config", "set_key", "validate"]
