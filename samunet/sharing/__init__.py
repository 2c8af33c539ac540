"""Sharing trained models: ``samunet_export_model`` writes a zip of adapter weights and what prediction needs,
``samunet_install_model`` unpacks one into ``$SAMUNET_RESULTS`` after checking it (nnU-Net's
``nnUNetv2_export_model_to_zip`` / ``nnUNetv2_install_pretrained_model_from_zip``). Base SAM weights never
travel in the zip: prediction looks them up by name and checks their sha256."""
