module github.com/openwebui-exporter/openwebui_exporter/test/cluster

go 1.26

require go.yaml.in/yaml/v3 v3.0.4
