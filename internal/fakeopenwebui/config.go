package fakeopenwebui

import "strings"

// handleModelsConfig is GET /api/v1/configs/models (get_admin_user): the
// admin's model settings, DEFAULT_MODELS among them.
func (s *Server) handleModelsConfig(c call) reply {
	if c.u.role != "admin" {
		return forbidden()
	}
	var def any // null when unset
	if s.cfg.DefaultModels != "" {
		def = s.cfg.DefaultModels
	}
	return jsonReply(200, map[string]any{"DEFAULT_MODELS": def, "DEFAULT_PINNED_MODELS": nil, "MODEL_ORDER_LIST": []string{}})
}

// handleAppConfig is GET /api/config as far as the exporter reads it:
// default_models is there only for a user decoded from a JWT (get_app_config
// decodes the bearer token as a JWT; an API key decodes to nobody).
func (s *Server) handleAppConfig(c call) reply {
	body := map[string]any{"status": true, "name": "Open WebUI", "version": s.cfg.Version}
	if !strings.HasPrefix(c.token, "sk-") {
		body["default_models"] = s.cfg.DefaultModels
	}
	return jsonReply(200, body)
}
