"""GPT-2 in the Hugging Face format (what transformers' GPT2LMHeadModel saves and loads):
pretrained reads such a folder (OpenAI's weights from the hub, or a local one) into our model;
export writes a run's model as one; layout holds the translation both use."""
